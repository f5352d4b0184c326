//! Prometheus metrics: request counts and latencies by route and status, plus gauges other
//! parts register (tasks by state, agents connected).

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

// Every label value comes from a short fixed set: the standard methods or `OTHER`, the route
// patterns of the table (or a fixed name for unknown paths), and status classes. A client
// choosing methods, paths or statuses cannot add series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

/// The method's label: one of the standard methods, else `OTHER`.
pub fn method_label(method: &Method) -> &'static str {
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::HEAD, "HEAD"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::PATCH, "PATCH"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    STANDARD
        .iter()
        .find(|(standard, _)| standard == method)
        .map_or("OTHER", |(_, label)| label)
}

/// The status's label: its class, `1xx` to `5xx`.
pub fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// A labelled gauge other modules set, e.g. tasks by state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 18))
}

/// Every metric of the coordinator.
pub struct Metrics {
    registry: std::sync::Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Tasks by state, kept current by the task system.
    pub tasks: Family<StateLabel, Gauge>,
    /// Agents currently connected.
    pub agents_connected: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hostplane");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let tasks = Family::<StateLabel, Gauge>::default();
        let agents_connected = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register("tasks", "Tasks by state", tasks.clone());
        registry.register(
            "agents_connected",
            "Agents connected now",
            agents_connected.clone(),
        );
        Metrics {
            registry: std::sync::Mutex::new(registry),
            requests,
            latency,
            tasks,
            agents_connected,
        }
    }

    /// Counts one answered request under its route pattern (never the raw path, so ids do not
    /// multiply the series). `route` must come from the route table or be a fixed name.
    pub fn observe_request(
        &self,
        method: &Method,
        route: &str,
        status: StatusCode,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method_label(method),
                route: route.to_string(),
                status: status_label(status),
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method_label(method),
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Registers a further metric (for modules that own their own).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, metric);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(registry) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_fixed_sets() {
        let cases = [
            ("GET", "GET"),
            ("DELETE", "DELETE"),
            ("BREW", "OTHER"),
            ("get", "OTHER"),
        ];
        for (method, label) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(method_label(&method), label);
        }
        assert_eq!(status_label(StatusCode::NOT_FOUND), "4xx");
        assert_eq!(status_label(StatusCode::ACCEPTED), "2xx");
        assert_eq!(status_label(StatusCode::GATEWAY_TIMEOUT), "5xx");
    }
}
