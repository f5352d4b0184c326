//! Agents in-process against a coordinator in-process: enrolled, run with short back-off, and
//! waited for until connected.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use coordinator::server::Running;

/// How long the channel tests wait for a connection or a close.
pub const WAIT: Duration = Duration::from_secs(20);

/// Run options for a test: reconnects quickly, gives up a connection attempt after 5 s.
pub fn run_options(state_dir: &Path) -> agent::RunOptions {
    let mut options = agent::RunOptions::new(state_dir);
    options.backoff_initial = Duration::from_millis(50);
    options.backoff_maximum = Duration::from_millis(500);
    options.connect_timeout = Duration::from_secs(5);
    options
}

/// Enrolls an agent for `instance` with a token from the coordinator, writing its identity to
/// `state_dir`.
pub async fn enroll(running: &Running, instance: u32, state_dir: &Path) -> agent::Enrolled {
    let offer = running
        .app
        .channel
        .issue_enrollment(instance, "admin")
        .unwrap();
    assert!(
        offer
            .command
            .starts_with("hostplane-agent enroll --token hpe1_")
    );
    agent::enroll(agent::EnrollOptions::new(offer.token, state_dir))
        .await
        .expect("enrollment succeeds")
}

/// An agent that answers pings only: the channel tests are about the transport.
pub fn spawn_agent(state_dir: &Path) -> agent::AgentHandle {
    agent::spawn(
        run_options(state_dir),
        agent::Handlers::new().with(agent::PingHandler),
        Arc::new(agent::MemoryFinishedTasks::new(100)),
    )
    .expect("the agent starts")
}

/// Waits (at most [`WAIT`]) until the agent is connected and has connected `connections` times.
pub async fn connected(handle: &agent::AgentHandle, connections: u64) -> agent::AgentState {
    handle
        .wait_until(WAIT, |state| {
            matches!(state.phase, agent::ConnectionPhase::Connected { .. })
                && state.connections >= connections
        })
        .await
        .unwrap_or_else(|state| panic!("the agent did not connect: {state:?}"))
}
