//! Helpers shared by the end-to-end tests: running programs with time limits, and real LXC
//! containers on a private bridge (see [`lxc`]).

pub mod binaries;
pub mod command;
pub mod lxc;
