//! Support code for every Hostplane test, in one place: a helper that two tests use lives here
//! and nowhere else.
//!
//! Only the other crates' `[dev-dependencies]` name this crate, and only their integration tests
//! (`tests/`) use it, never `#[cfg(test)]` unit tests inside `src/`: integration tests link the
//! same library artifacts as this crate, unit tests would see a second copy of their own crate.
//!
//! By concern: [`gate`] (skip, or fail under `CI=true`), [`net`] (free loopback ports), [`wait`]
//! (polling bounded in count and time), [`clock`] (step timings), [`dpkg`] (dpkg's lock and the
//! machine's packages), [`databases`] (private MariaDB and PostgreSQL), [`vhosts`] (private
//! nginx), [`pebble`] (an ACME server), [`coordinator`] (a coordinator in-process),
//! [`agent`] (agents in-process against it), [`agent_work`] (a customer's instance with its
//! agent, driven through the API), [`quic`] (raw QUIC clients of the agent channel) and
//! [`pvesim`] (the simulator in-process with a client of its API), [`process`] (the
//! coordinator binary as a child process), and [`architecture`] (the
//! layering checks read from a crate's sources).

pub mod agent;
pub mod agent_work;
pub mod architecture;
pub mod clock;
pub mod coordinator;
pub mod databases;
pub mod dpkg;
pub mod gate;
pub mod net;
pub mod pebble;
pub mod process;
pub mod pvesim;
pub mod quic;
pub mod vhosts;
pub mod wait;

/// The agent library, for the coordinator's tests (the two crates never depend on each other).
pub use ::agent as agent_crate;
/// The coordinator library, for the agent's tests.
pub use ::coordinator as coordinator_crate;
