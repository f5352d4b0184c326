//! Helpers shared by the end-to-end tests: starting binaries on port 0 and cleaning up after them.
