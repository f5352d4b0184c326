//! Fault injection: added latency, random failures per endpoint, failing or hanging tasks,
//! offline nodes and injected config locks. Random choices come from a seeded generator.

use shell::sync::MutexExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::model::Cluster;

/// A rule that makes matching calls fail at a rate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FailureRule {
    /// HTTP method to match (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// Regular expression searched in the path after `/api2/json` (e.g. `^/nodes/[^/]+/lxc$`).
    pub path: String,
    /// Probability in 0..=1 that a matching call fails.
    #[serde(default = "one")]
    pub rate: f64,
    /// Status to answer: 500, 595 or 596 (anything else is sent as given).
    #[serde(default = "five_hundred")]
    pub status: u16,
    /// Reason phrase / message; defaults depend on the status.
    #[serde(default)]
    pub message: Option<String>,
}

fn one() -> f64 {
    1.0
}

fn five_hundred() -> u16 {
    500
}

/// What happens to a matching task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum TaskEffect {
    /// The task ends with this error as exit status.
    Fail(String),
    /// The task never ends until stopped (`DELETE .../tasks/{upid}`) or the fault is cleared.
    Hang,
}

/// A rule that changes the outcome of tasks.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskFault {
    /// Task type to match (`vzcreate`, `vzstart`...); any when absent.
    #[serde(default)]
    pub task_type: Option<String>,
    /// Container to match; any when absent.
    #[serde(default)]
    pub vmid: Option<u32>,
    /// The effect.
    pub effect: TaskEffect,
    /// How many tasks it still applies to; unlimited when absent.
    #[serde(default)]
    pub count: Option<u32>,
}

/// A config lock to place on a container for a while.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockFault {
    /// The container.
    pub vmid: u32,
    /// The lock name (`backup`, `snapshot`...).
    #[serde(default = "backup")]
    pub lock: String,
    /// How long, in milliseconds.
    pub ms: u64,
}

fn backup() -> String {
    "backup".into()
}

/// The fault settings, as sent to and read from `/_sim/faults`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FaultSpec {
    /// Latency added to every API call, in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// Random failures per endpoint.
    #[serde(default)]
    pub rules: Vec<FailureRule>,
    /// Task outcomes.
    #[serde(default)]
    pub tasks: Vec<TaskFault>,
    /// Offline nodes and the status their calls answer (595 `No route to host` or 596
    /// `Connection timed out`).
    #[serde(default)]
    pub offline_nodes: BTreeMap<String, u16>,
    /// Locks to place now (only applied when posted; never reported back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<LockFault>,
    /// Reseeds the random generator when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// How an injected failure answers.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectedFailure {
    /// HTTP status.
    pub status: u16,
    /// Reason phrase / message.
    pub message: String,
}

struct FaultState {
    spec: FaultSpec,
    random: StdRng,
    compiled: Vec<Option<Regex>>,
    generation: u64,
}

/// A cloneable handle to change faults while the simulator runs.
#[derive(Clone)]
pub struct Faults {
    state: Arc<Mutex<FaultState>>,
    cluster: Arc<Mutex<Cluster>>,
    changed: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Faults")
            .field("spec", &self.spec())
            .finish()
    }
}

/// The default reason phrase of an injected status.
pub fn default_message(status: u16) -> &'static str {
    match status {
        595 => "No route to host",
        596 => "Connection timed out",
        597 => "Broken pipe",
        _ => "simulated failure",
    }
}

impl Faults {
    pub(crate) fn new(seed: u64, cluster: Arc<Mutex<Cluster>>) -> Faults {
        Faults {
            state: Arc::new(Mutex::new(FaultState {
                spec: FaultSpec::default(),
                random: StdRng::seed_from_u64(seed),
                compiled: Vec::new(),
                generation: 0,
            })),
            cluster,
            changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.locked()
    }

    /// The current settings.
    pub fn spec(&self) -> FaultSpec {
        self.lock().spec.clone()
    }

    /// Replaces all settings (and applies its `locks` and `seed`). Fails on a bad path regex.
    pub fn set(&self, mut spec: FaultSpec) -> Result<(), regex::Error> {
        let compiled = spec
            .rules
            .iter()
            .map(|rule| Regex::new(&rule.path).map(Some))
            .collect::<Result<Vec<_>, _>>()?;
        let locks = std::mem::take(&mut spec.locks);
        {
            let mut state = self.lock();
            if let Some(seed) = spec.seed.take() {
                state.random = StdRng::seed_from_u64(seed);
            }
            self.apply_offline(&state.spec.offline_nodes, &spec.offline_nodes);
            state.spec = spec;
            state.compiled = compiled;
            state.generation += 1;
        }
        for lock in locks {
            self.lock_guest(lock.vmid, &lock.lock, Duration::from_millis(lock.ms));
        }
        self.changed.notify_waiters();
        Ok(())
    }

    /// Removes every fault.
    pub fn clear(&self) {
        let _ = self.set(FaultSpec::default());
    }

    fn apply_offline(&self, before: &BTreeMap<String, u16>, after: &BTreeMap<String, u16>) {
        let mut cluster = self.cluster.locked();
        for name in before.keys() {
            cluster.set_node_online(name, true);
        }
        for name in after.keys() {
            cluster.set_node_online(name, false);
        }
    }

    fn update(&self, change: impl FnOnce(&mut FaultSpec)) {
        let mut spec = self.spec();
        change(&mut spec);
        let _ = self.set(spec);
    }

    /// Adds latency to every call.
    pub fn set_latency(&self, latency: Duration) {
        self.update(|spec| {
            spec.latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX)
        });
    }

    /// Adds a random-failure rule.
    pub fn add_rule(&self, rule: FailureRule) -> Result<(), regex::Error> {
        let mut spec = self.spec();
        spec.rules.push(rule);
        self.set(spec)
    }

    /// Adds a task fault.
    pub fn add_task_fault(&self, fault: TaskFault) {
        self.update(|spec| spec.tasks.push(fault));
    }

    /// Takes a node offline (`status` 595 or 596) or brings it back (`None`).
    pub fn set_node_offline(&self, node: &str, status: Option<u16>) {
        let node = node.to_string();
        self.update(move |spec| match status {
            Some(status) => {
                spec.offline_nodes.insert(node, status);
            }
            None => {
                spec.offline_nodes.remove(&node);
            }
        });
    }

    /// Reseeds the random generator.
    pub fn reseed(&self, seed: u64) {
        self.lock().random = StdRng::seed_from_u64(seed);
    }

    /// Places a config lock on a container and removes it after `duration` (if it is still the
    /// same lock). Returns false when the container does not exist.
    pub fn lock_guest(&self, vmid: u32, lock: &str, duration: Duration) -> bool {
        let placed = self.cluster.locked().set_lock(vmid, Some(lock));
        if placed && let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let cluster = self.cluster.clone();
            let lock = lock.to_string();
            runtime.spawn(async move {
                tokio::time::sleep(duration).await;
                let mut cluster = cluster.locked();
                if cluster
                    .guests
                    .get(&vmid)
                    .and_then(|guest| guest.config.get("lock"))
                    == Some(&lock)
                {
                    cluster.set_lock(vmid, None);
                }
            });
        }
        placed
    }

    pub(crate) fn latency(&self) -> Duration {
        Duration::from_millis(self.lock().spec.latency_ms)
    }

    pub(crate) fn offline_status(&self, node: &str) -> Option<u16> {
        self.lock().spec.offline_nodes.get(node).copied()
    }

    /// Decides whether this call fails (draws from the seeded generator for each matching rule).
    pub(crate) fn injected_failure(&self, method: &str, path: &str) -> Option<InjectedFailure> {
        let mut state = self.lock();
        let FaultState {
            spec,
            random,
            compiled,
            ..
        } = &mut *state;
        for (rule, regex) in spec.rules.iter().zip(compiled.iter()) {
            let method_matches = rule
                .method
                .as_deref()
                .is_none_or(|wanted| wanted.eq_ignore_ascii_case(method));
            let path_matches = regex.as_ref().is_some_and(|regex| regex.is_match(path));
            if method_matches && path_matches && random.random_bool(rule.rate.clamp(0.0, 1.0)) {
                let message = rule
                    .message
                    .clone()
                    .unwrap_or_else(|| default_message(rule.status).to_string());
                return Some(InjectedFailure {
                    status: rule.status,
                    message,
                });
            }
        }
        None
    }

    /// The effect for a new task, consuming one use of a counted fault.
    pub(crate) fn task_effect(
        &self,
        task_type: &str,
        vmid: Option<u32>,
    ) -> Option<(TaskEffect, u64)> {
        let mut state = self.lock();
        let generation = state.generation;
        let index = state.spec.tasks.iter().position(|fault| {
            fault
                .task_type
                .as_deref()
                .is_none_or(|wanted| wanted == task_type)
                && fault.vmid.is_none_or(|wanted| Some(wanted) == vmid)
                && fault.count.is_none_or(|count| count > 0)
        })?;
        let fault = &mut state.spec.tasks[index];
        let effect = fault.effect.clone();
        if let Some(count) = fault.count.as_mut() {
            *count -= 1;
        }
        Some((effect, generation))
    }

    /// Whether a hang that began under `generation` still applies (false once faults were changed
    /// and no hang rule matches any more).
    pub(crate) fn hang_still_applies(&self, task_type: &str, vmid: Option<u32>) -> bool {
        let state = self.lock();
        state.spec.tasks.iter().any(|fault| {
            fault.effect == TaskEffect::Hang
                && fault
                    .task_type
                    .as_deref()
                    .is_none_or(|wanted| wanted == task_type)
                && fault.vmid.is_none_or(|wanted| Some(wanted) == vmid)
        })
    }

    /// Resolves when the fault settings change.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faults(seed: u64) -> Faults {
        Faults::new(seed, Arc::new(Mutex::new(Cluster::new(1, 0))))
    }

    #[test]
    fn seeded_failures_repeat() {
        let draw = |seed| {
            let faults = faults(seed);
            faults
                .add_rule(FailureRule {
                    method: Some("GET".into()),
                    path: "^/nodes$".into(),
                    rate: 0.5,
                    status: 595,
                    message: None,
                })
                .unwrap();
            (0..64)
                .map(|_| faults.injected_failure("GET", "/nodes").is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        let hits = draw(7).iter().filter(|hit| **hit).count();
        assert!((10..=54).contains(&hits), "{hits}");
        let faults = faults(1);
        faults
            .add_rule(FailureRule {
                method: Some("POST".into()),
                path: "^/nodes$".into(),
                rate: 1.0,
                status: 500,
                message: None,
            })
            .unwrap();
        assert_eq!(faults.injected_failure("GET", "/nodes"), None);
        assert_eq!(
            faults.injected_failure("POST", "/nodes"),
            Some(InjectedFailure {
                status: 500,
                message: "simulated failure".into()
            })
        );
    }

    #[test]
    fn counted_task_faults_run_out() {
        let faults = faults(1);
        faults.add_task_fault(TaskFault {
            task_type: Some("vzstart".into()),
            vmid: None,
            effect: TaskEffect::Fail("boom".into()),
            count: Some(1),
        });
        assert!(faults.task_effect("vzstop", Some(100)).is_none());
        assert_eq!(
            faults
                .task_effect("vzstart", Some(100))
                .map(|(effect, _)| effect),
            Some(TaskEffect::Fail("boom".into()))
        );
        assert!(faults.task_effect("vzstart", Some(100)).is_none());
    }

    #[test]
    fn spec_parses_from_json() {
        let spec: FaultSpec = serde_json::from_str(
            r#"{"latency_ms":5,"rules":[{"path":"^/cluster","status":596}],
                "tasks":[{"task_type":"vzcreate","effect":"hang"},{"effect":{"fail":"no space"}}],
                "offline_nodes":{"pve2":595},"locks":[{"vmid":101,"ms":100}],"seed":3}"#,
        )
        .unwrap();
        assert_eq!(spec.rules[0].rate, 1.0);
        assert_eq!(spec.tasks[0].effect, TaskEffect::Hang);
        assert_eq!(spec.tasks[1].effect, TaskEffect::Fail("no space".into()));
        assert_eq!(spec.locks[0].lock, "backup");
    }
}
