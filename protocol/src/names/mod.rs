//! Names checked before anything runs: Debian package names and an administrator's allow/deny
//! patterns, database and user names and passwords, with each engine's quoting. Pure functions,
//! so the coordinator refuses bad input (422) before it sends a task and the agent checks again
//! before it runs a program.

pub mod database;
pub mod package;
pub mod package_policy;
