//! Round trips, truncation, corruption, size limits and version checks of every wire type.

mod strategies;

use std::collections::BTreeSet;
use std::fmt::Debug;

use bytes::{BufMut, BytesMut};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use protocol::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use strategies::*;

type Decoder<T> = fn(&mut BytesMut) -> Result<Option<T>, ProtocolError>;

/// Checks that `frame` decodes back to `value` with nothing left over, that every truncation of
/// it is harmless, and that every single corrupted byte gives an error or another value.
fn check_frame<T: PartialEq + Debug>(value: &T, frame: &[u8], decoder: Decoder<T>) {
    let mut buffer = BytesMut::from(frame);
    let decoded = decoder(&mut buffer).unwrap().unwrap();
    assert_eq!(&decoded, value);
    assert!(
        buffer.is_empty(),
        "{} bytes left after one frame",
        buffer.len()
    );

    // Two frames back to back come out one at a time.
    let mut buffer = BytesMut::from(frame);
    buffer.extend_from_slice(frame);
    assert_eq!(decoder(&mut buffer).unwrap().as_ref(), Some(value));
    assert_eq!(buffer.len(), frame.len());
    assert_eq!(decoder(&mut buffer).unwrap().as_ref(), Some(value));
    assert!(buffer.is_empty());

    // A frame cut short is waited for, and nothing is consumed.
    for cut in 0..frame.len() {
        let mut buffer = BytesMut::from(&frame[..cut]);
        assert!(
            matches!(decoder(&mut buffer), Ok(None)),
            "cut at {cut} of {}",
            frame.len()
        );
        assert_eq!(buffer.len(), cut);
    }

    // A complete frame whose payload is cut short is an error, and the frame is consumed.
    let payload = &frame[LENGTH_PREFIX..];
    for cut in 0..payload.len() {
        let mut buffer = BytesMut::new();
        encode(&payload[..cut], &mut buffer).unwrap();
        assert!(
            decoder(&mut buffer).is_err(),
            "payload cut at {cut} decoded"
        );
        assert!(buffer.is_empty());
    }

    // Any single corrupted byte gives an error, a wait for more input, or a different value.
    for index in 0..frame.len() {
        let mut corrupted = frame.to_vec();
        corrupted[index] ^= 0xff;
        let mut buffer = BytesMut::from(&corrupted[..]);
        if let Ok(Some(other)) = decoder(&mut buffer) {
            assert_ne!(
                &other, value,
                "byte {index} flipped and the value is unchanged"
            );
        }
    }
}

fn check_message<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let frame = encode_message(value).unwrap();
    check_frame(value, &frame, decode_message::<T>);
}

fn check_handshake<T>(value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let frame = encode_handshake(value).unwrap();
    assert_eq!(
        frame[LENGTH_PREFIX..][..HANDSHAKE_MAGIC.len()],
        HANDSHAKE_MAGIC
    );
    check_frame(value, &frame, decode_handshake::<T>);
}

macro_rules! properties {
    ($check:ident { $($name:ident: $strategy:expr,)* }) => {
        proptest! {
            $(
                #[test]
                fn $name(value in $strategy) {
                    $check(&value);
                }
            )*
        }
    };
}

properties!(check_message {
    agent_message_survives_the_wire: agent_message(),
    coordinator_message_survives_the_wire: coordinator_message(),
    task_delivery_survives_the_wire: task_delivery(),
    operation_survives_the_wire: operation(),
    operation_output_survives_the_wire: operation_output(),
    outcome_survives_the_wire: outcome(),
    error_data_survives_the_wire: error_data(),
    heartbeat_survives_the_wire: heartbeat(),
    heartbeat_ack_survives_the_wire: heartbeat_ack(),
    task_inventory_survives_the_wire: task_inventory(),
    data_stream_header_survives_the_wire: data_stream_header(),
});

properties!(check_handshake {
    hello_reply_survives_the_wire: hello_reply(),
    enroll_request_survives_the_wire: enroll_request(),
    enroll_response_survives_the_wire: enroll_response(),
});

proptest! {
    #[test]
    fn hello_survives_the_wire(hello in hello()) {
        let frame = encode_hello(&hello).unwrap();
        check_frame(&hello, &frame, decode_hello);
    }

    #[test]
    fn task_id_text_round_trips(id in task_id()) {
        let text = id.to_string();
        prop_assert_eq!(text.len(), 36);
        prop_assert_eq!(text.parse::<TaskId>().unwrap(), id);
        prop_assert_eq!(text.to_uppercase().parse::<TaskId>().unwrap(), id);
        prop_assert_eq!(text.replace('-', "").parse::<TaskId>().unwrap(), id);
    }
}

/// The number of variants of enum `T`, found from the wire: the first variant index whose
/// decoding fails for a reason other than the missing variant body.
fn variant_count<T: DeserializeOwned>() -> u8 {
    for index in 0..=250u8 {
        match decode_payload::<T>(&[index]) {
            Ok(_)
            | Err(ProtocolError::Decode(bincode::error::DecodeError::UnexpectedEnd { .. })) => {}
            Err(_) => return index,
        }
    }
    panic!("no unknown variant below 251");
}

/// The variant indexes that 1000 values of `strategy` use.
fn variants_generated<T: Serialize + Debug>(strategy: impl Strategy<Value = T>) -> BTreeSet<u8> {
    let mut runner = TestRunner::deterministic();
    (0..1000)
        .map(|_| {
            let value = strategy.new_tree(&mut runner).unwrap().current();
            encode_message(&value).unwrap()[LENGTH_PREFIX]
        })
        .collect()
}

fn check_every_variant_generated<T: Serialize + DeserializeOwned + Debug>(
    strategy: impl Strategy<Value = T>,
) {
    let count = variant_count::<T>();
    assert!(
        count > 1,
        "{} has {count} variants",
        std::any::type_name::<T>()
    );
    assert_eq!(
        variants_generated(strategy),
        (0..count).collect(),
        "{}",
        std::any::type_name::<T>()
    );
}

#[test]
fn strategies_generate_every_variant_of_every_enum() {
    check_every_variant_generated(agent_message());
    check_every_variant_generated(coordinator_message());
    check_every_variant_generated(operation());
    check_every_variant_generated(operation_output());
    check_every_variant_generated(outcome());
    check_every_variant_generated(error_code());
    check_every_variant_generated(database_engine());
    check_every_variant_generated(engine());
    check_every_variant_generated(refusal_reason());
    check_every_variant_generated(hello_reply());
    check_every_variant_generated(enroll_response());
    check_every_variant_generated(presence());
    check_every_variant_generated(www_redirect());
    check_every_variant_generated(error_level());
    check_every_variant_generated(certificate_source());
    check_every_variant_generated(purge_request());
}

#[test]
fn error_codes_are_listed_in_wire_order() {
    assert_eq!(variant_count::<ErrorCode>() as usize, ErrorCode::ALL.len());
    for (index, code) in ErrorCode::ALL.iter().enumerate() {
        assert_eq!(decode_payload::<ErrorCode>(&[index as u8]).unwrap(), *code);
    }
}

#[test]
fn oversize_length_is_refused_before_allocating() {
    for declared in [MAX_FRAME as u32 + 1, u32::MAX] {
        let fresh = || {
            let mut buffer = BytesMut::with_capacity(16);
            buffer.put_u32(declared);
            buffer.put_slice(b"abc");
            buffer
        };
        let expected = FrameError::TooLarge {
            declared: u64::from(declared),
            maximum: MAX_FRAME,
        };

        let mut buffer = fresh();
        let capacity = buffer.capacity();
        assert_eq!(decode(&mut buffer), Err(expected.clone()));
        assert_eq!((buffer.len(), buffer.capacity()), (7, capacity));

        let mut buffer = fresh();
        let error = decode_message::<AgentMessage>(&mut buffer).unwrap_err();
        assert!(
            matches!(&error, ProtocolError::Frame(e) if *e == expected),
            "{error}"
        );
        assert_eq!((buffer.len(), buffer.capacity()), (7, capacity));

        let mut buffer = fresh();
        let error = decode_hello(&mut buffer).unwrap_err();
        assert!(
            matches!(&error, ProtocolError::Frame(e) if *e == expected),
            "{error}"
        );
        assert_eq!((buffer.len(), buffer.capacity()), (7, capacity));

        let mut buffer = fresh();
        let error = decode_handshake::<EnrollRequest>(&mut buffer).unwrap_err();
        assert!(
            matches!(&error, ProtocolError::Frame(e) if *e == expected),
            "{error}"
        );
        assert_eq!((buffer.len(), buffer.capacity()), (7, capacity));
    }
}

#[test]
fn oversize_message_is_refused_when_encoding() {
    let message = AgentMessage::RenewCertificate {
        csr_der: vec![0; MAX_FRAME],
    };
    let error = encode_message(&message).unwrap_err();
    assert!(
        matches!(error, ProtocolError::Frame(FrameError::TooLarge { .. })),
        "{error}"
    );
}

#[test]
fn huge_lengths_inside_a_message_are_refused() {
    // Variant 3 (`TaskLog`), a task id, then a string claiming u64::MAX bytes: varint marker
    // 253 followed by eight bytes.
    let mut payload = vec![3];
    payload.extend_from_slice(&[0; 16]);
    payload.push(253);
    payload.extend_from_slice(&[0xff; 8]);
    assert!(decode_payload::<AgentMessage>(&payload).is_err());

    // Variant 6 (`RenewCertificate`) with a byte vector claiming 2^40 elements.
    let mut payload = vec![6, 253];
    payload.extend_from_slice(&(1u64 << 40).to_be_bytes());
    payload.extend_from_slice(&[1, 2, 3]);
    assert!(decode_payload::<AgentMessage>(&payload).is_err());
}

#[test]
fn trailing_bytes_are_refused() {
    let frame = encode_message(&CoordinatorMessage::CancelTask {
        task_id: TaskId::from_bytes([9; 16]),
    })
    .unwrap();
    let mut payload = frame[LENGTH_PREFIX..].to_vec();
    payload.push(0);
    let mut buffer = BytesMut::new();
    encode(&payload, &mut buffer).unwrap();
    let error = decode_message::<CoordinatorMessage>(&mut buffer).unwrap_err();
    assert!(
        matches!(error, ProtocolError::TrailingBytes { trailing: 1 }),
        "{error}"
    );
    assert!(buffer.is_empty());
}

#[test]
fn hello_layout_is_frozen() {
    let frame = encode_hello(&Hello::new("0.1.0", Features::PACKAGES)).unwrap();
    let expected: &[u8] = b"\0\0\0\x0fHPLN\0\0\0\x01\x050.1.0\x01";
    assert_eq!(&frame[..], expected);
}

#[test]
fn newer_hello_is_reported_as_version_mismatch() {
    let hello = Hello {
        protocol_version: 2,
        ..Hello::new("9.0.0", Features::ALL)
    };
    let mut buffer = BytesMut::from(&encode_hello(&hello).unwrap()[..]);
    let error = decode_hello(&mut buffer).unwrap_err();
    assert!(
        matches!(error, ProtocolError::VersionMismatch { ours: 1, theirs: 2 }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "protocol version mismatch: we speak version 1, the peer speaks version 2"
    );
    assert!(buffer.is_empty(), "the mismatched frame is consumed");
}

#[test]
fn mismatched_version_is_reported_whatever_the_body() {
    // A future version may lay out its body in any way; only the prefix is read.
    let mut payload = Vec::from(HANDSHAKE_MAGIC);
    payload.extend_from_slice(&7u32.to_be_bytes());
    payload.extend_from_slice(&[0xff; 20]);
    let mut buffer = BytesMut::new();
    encode(&payload, &mut buffer).unwrap();
    let error = decode_handshake::<HelloReply>(&mut buffer).unwrap_err();
    assert!(
        matches!(error, ProtocolError::VersionMismatch { ours: 1, theirs: 7 }),
        "{error:?}"
    );
}

#[test]
fn reply_from_another_version_is_reported() {
    let reply = HelloReply::Refused(Refused {
        reason: RefusalReason::UnsupportedVersion { supported: 1 },
        message: "upgrade the agent".into(),
    });
    let mut frame = encode_handshake(&reply).unwrap().to_vec();
    let version = LENGTH_PREFIX + HANDSHAKE_MAGIC.len();
    frame[version..version + 4].copy_from_slice(&3u32.to_be_bytes());
    let error = decode_handshake::<HelloReply>(&mut BytesMut::from(&frame[..])).unwrap_err();
    assert!(
        matches!(error, ProtocolError::VersionMismatch { ours: 1, theirs: 3 }),
        "{error:?}"
    );
}

#[test]
fn non_handshake_frame_is_not_a_hello() {
    let frame = encode_message(&AgentMessage::TaskAck {
        task_id: TaskId::from_bytes([1; 16]),
        duplicate: false,
    })
    .unwrap();
    let error = decode_hello(&mut BytesMut::from(&frame[..])).unwrap_err();
    assert!(matches!(error, ProtocolError::BadMagic { .. }), "{error:?}");

    let mut buffer = BytesMut::new();
    encode(b"HPLN\0\0", &mut buffer).unwrap();
    let error = decode_hello(&mut buffer).unwrap_err();
    assert!(matches!(error, ProtocolError::Decode(_)), "{error:?}");
}

#[test]
fn features_keep_unknown_bits() {
    let features = Features::from_bits(1 << 63) | Features::DATABASES;
    let hello = Hello::new("0.1.0", features);
    let mut buffer = BytesMut::from(&encode_hello(&hello).unwrap()[..]);
    let decoded = decode_hello(&mut buffer).unwrap().unwrap();
    assert_eq!(
        decoded.features.bits(),
        (1 << 63) | Features::DATABASES.bits()
    );
    assert!(decoded.features.contains(Features::DATABASES));
    assert!(!decoded.features.contains(Features::PACKAGES));
    assert_eq!(
        decoded.features.intersection(Features::ALL),
        Features::DATABASES
    );
}

#[test]
fn task_id_text_is_checked() {
    let id: TaskId = "0123abcd-4567-89ef-0123-456789abcdef".parse().unwrap();
    assert_eq!(id.as_bytes()[..4], [0x01, 0x23, 0xab, 0xcd]);
    for bad in [
        "",
        "0123abcd-4567-89ef-0123-456789abcde",
        "0123abcd-4567-89ef-0123-456789abcdeg",
        "0123abcd4-567-89ef-0123-456789abcdef",
        "0123abcd-4567-89ef-0123+456789abcdef",
        "+123abcd4567489ef01234456789abcdef",
        "ä123abcd4567489ef01234456789abcde",
    ] {
        assert!(bad.parse::<TaskId>().is_err(), "{bad:?}");
    }
}

#[test]
fn human_readable_forms_use_text() {
    let id = TaskId::from_bytes([0xab; 16]);
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, "\"abababab-abab-abab-abab-abababababab\"");
    assert_eq!(serde_json::from_str::<TaskId>(&json).unwrap(), id);
    assert_eq!(
        serde_json::to_string(&ErrorCode::InvalidInput).unwrap(),
        "\"invalid_input\""
    );
    assert_eq!(
        serde_json::to_string(&DatabaseEngine::PostgreSql).unwrap(),
        "\"postgresql\""
    );
    assert_eq!(
        serde_json::to_string(&Engine::MariaDb).unwrap(),
        "\"mariadb\""
    );
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let operation = Operation::DatabaseCreate {
        engine: DatabaseEngine::MariaDb,
        name: "shop".into(),
        user: "shop".into(),
        password: Secret::new("hunter2"),
    };
    let shown = format!("{operation:?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}
