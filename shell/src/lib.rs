//! The IO shells both programs share: the frame reader and writer over a stream, the atomic
//! file write, and locks that recover from poisoning.
//!
//! `protocol` is the pure core (framing and encoding of bytes already in memory); this crate is
//! the thin layer that moves those bytes over a stream or onto the disk. The coordinator, the
//! agent and the simulator use it instead of writing their own.

pub mod atomic;
pub mod sync;
pub mod wire;

pub use atomic::write_atomically;
