//! The seam between the API layer and whatever performs container work. The simulated backend
//! only waits; a real LXC backend could run the work on a host while the cluster model keeps the
//! configuration and state.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::model::Action;
use crate::network::Interface;

/// A boxed future returned by a backend.
pub type BackendFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + 'a>>;

/// Performs the work of a task. `Ok` carries extra task log lines; `Err` the task's error text.
/// The cluster model applies the state change after `perform` returns `Ok`.
pub trait Backend: Send + Sync + 'static {
    /// Does the work of `action` on `node`.
    fn perform<'a>(&'a self, node: &'a str, action: &'a Action) -> BackendFuture<'a>;

    /// The host's real bridges, when this backend runs guests on the host (they replace the
    /// simulated bridges in `GET /nodes/{node}/network`); `None` keeps the simulated ones.
    fn host_bridges(&self) -> Option<BTreeMap<String, Interface>> {
        None
    }
}

/// A backend that takes a fixed time per task and changes nothing outside the model.
#[derive(Debug, Clone)]
pub struct SimulatedBackend {
    /// How long each task takes.
    pub task_duration: Duration,
}

impl Backend for SimulatedBackend {
    fn perform<'a>(&'a self, _node: &'a str, _action: &'a Action) -> BackendFuture<'a> {
        let duration = self.task_duration;
        Box::pin(async move {
            if !duration.is_zero() {
                tokio::time::sleep(duration).await;
            }
            Ok(Vec::new())
        })
    }
}
