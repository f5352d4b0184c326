//! Helpers shared by the end-to-end tests: running programs with time limits, real LXC
//! containers on a private bridge (see [`lxc`]), the project's Debian packages ([`packages`]) and
//! a coordinator process on the host with a client of its REST API ([`coordinator`]).

pub mod binaries;
pub mod command;
pub mod coordinator;
pub mod lxc;
pub mod packages;
