//! Feeds arbitrary bytes to the frame decoder and to the decoder of every message type.
//!
//! Run with `cargo install cargo-fuzz`, then from `protocol/fuzz`:
//! `RUSTC_BOOTSTRAP=1 cargo fuzz run decode -- -max_total_time=60` (the variable lets a stable
//! toolchain accept the sanitizer flags cargo-fuzz passes; it is not needed on nightly).

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use protocol::{
    AgentMessage, CoordinatorMessage, DataStreamHeader, EnrollRequest, EnrollResponse, HelloReply,
    MAX_FRAME, ProtocolError, TaskDelivery, decode, decode_handshake, decode_hello, decode_message,
};

/// Decodes frames off `input` until it runs out or fails, checking the decoder's promises.
fn drain<T>(input: &[u8], decoder: fn(&mut BytesMut) -> Result<Option<T>, ProtocolError>) {
    let mut buffer = BytesMut::from(input);
    // Each successful call consumes at least the 4-byte prefix, so this ends.
    for _ in 0..=input.len() / 4 {
        let before = buffer.len();
        match decoder(&mut buffer) {
            Ok(Some(_)) => assert!(buffer.len() < before),
            Err(ProtocolError::Frame(_)) | Ok(None) => {
                assert_eq!(buffer.len(), before);
                return;
            }
            Err(_) => assert!(buffer.len() < before),
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let mut buffer = BytesMut::from(input);
    while let Ok(Some(frame)) = decode(&mut buffer) {
        assert!(frame.payload.len() <= MAX_FRAME);
    }
    drain(input, decode_message::<AgentMessage>);
    drain(input, decode_message::<CoordinatorMessage>);
    drain(input, decode_message::<TaskDelivery>);
    drain(input, decode_message::<DataStreamHeader>);
    drain(input, decode_hello);
    drain(input, decode_handshake::<HelloReply>);
    drain(input, decode_handshake::<EnrollRequest>);
    drain(input, decode_handshake::<EnrollResponse>);
});
