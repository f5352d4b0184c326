//! Measures the largest single allocation made while decoding hostile input.
//!
//! This file is its own test binary with a single test, so the counting allocator sees only the
//! allocations of that test.

// A global allocator can only be written with `unsafe`; it forwards to the system allocator.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, BytesMut};
use protocol::{AgentMessage, CoordinatorMessage, MAX_FRAME, decode_message};

struct Measuring;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Measuring {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(pointer, layout) }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(pointer, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Measuring = Measuring;

/// Builds one frame holding `payload`, by hand, so no library code runs before measuring.
fn frame(payload: &[u8]) -> BytesMut {
    let mut buffer = BytesMut::with_capacity(4 + payload.len());
    buffer.put_u32(payload.len() as u32);
    buffer.put_slice(payload);
    buffer
}

#[test]
fn hostile_lengths_never_size_an_allocation_beyond_the_maximum() {
    let huge = [253, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    let mut inputs = Vec::new();
    // An oversize frame prefix.
    let mut oversize = BytesMut::new();
    oversize.put_u32(u32::MAX);
    inputs.push(oversize);
    // `RenewCertificate` with a byte vector claiming 2^63 elements.
    inputs.push(frame(&[[6].as_slice(), &huge].concat()));
    // `TaskLog` with a line claiming 2^63 bytes.
    inputs.push(frame(&[[3].as_slice(), &[0; 16], &huge].concat()));
    // `Reconcile` with an inventory claiming 2^63 task ids.
    inputs.push(frame(&[[5].as_slice(), &huge].concat()));
    // A frame whose whole payload is a length just below the frame limit.
    let mut near_limit = vec![6, 253];
    near_limit.extend_from_slice(&(MAX_FRAME as u64 - 1).to_be_bytes());
    inputs.push(frame(&near_limit));

    LARGEST.store(0, Ordering::Relaxed);
    for mut input in inputs {
        assert!(decode_message::<AgentMessage>(&mut input.clone()).is_err());
        assert!(decode_message::<CoordinatorMessage>(&mut input).is_err());
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= MAX_FRAME,
        "decoding allocated {largest} bytes at once, more than {MAX_FRAME}"
    );
}
