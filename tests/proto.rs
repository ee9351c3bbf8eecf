//! The socket protocol's codec: golden bytes, every malformed case, and properties over
//! arbitrary input (no panic, exact round trips).

use lokey::proto::{self, ErrorCode, Frame, MAX_FRAME_LEN, Request};
use proptest::prelude::*;

fn encoded(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::new();
    frame.encode(&mut out);
    out
}

#[test]
fn status_request_golden_bytes() {
    // length 2 + 16 bytes of JSON, version 1, kind 1.
    let json = br#"{"verb":"status"}"#;
    let mut expect = vec![0, 0, 0, (2 + json.len()) as u8, 1, 1];
    expect.extend_from_slice(json);
    assert_eq!(encoded(&Frame::Request(Request::Status)), expect);
}

#[test]
fn end_and_error_golden_bytes() {
    assert_eq!(
        encoded(&Frame::End(258)),
        vec![0, 0, 0, 10, 1, 4, 0, 0, 0, 0, 0, 0, 1, 2]
    );
    assert_eq!(
        encoded(&Frame::Error {
            code: ErrorCode::Unavailable,
            message: "no".into()
        }),
        vec![0, 0, 0, 6, 1, 5, 0, 5, b'n', b'o']
    );
}

#[test]
fn ring_frames_golden_bytes() {
    assert_eq!(
        encoded(&Frame::Ring {
            slots: 4,
            slot_len: 0x0004_0000
        }),
        vec![0, 0, 0, 10, 1, 6, 0, 0, 0, 4, 0, 4, 0, 0]
    );
    assert_eq!(
        encoded(&Frame::Filled { slot: 3, len: 258 }),
        vec![0, 0, 0, 10, 1, 7, 0, 0, 0, 3, 0, 0, 1, 2]
    );
    assert_eq!(
        encoded(&Frame::Release { slot: 2 }),
        vec![0, 0, 0, 6, 1, 8, 0, 0, 0, 2]
    );
}

#[test]
fn ring_frames_of_the_wrong_size_are_malformed() {
    for (kind, len) in [(6u8, 4usize), (6, 12), (7, 0), (8, 8), (8, 3)] {
        let mut bytes = vec![0, 0, 0, 2 + len as u8, 1, kind];
        bytes.resize(bytes.len() + len, 0);
        let err = Frame::decode(&bytes, MAX_FRAME_LEN).unwrap_err();
        assert!(
            matches!(err, proto::Error::Malformed(_)),
            "kind {kind} len {len}: {err}"
        );
    }
}

#[test]
fn a_shared_request_names_the_field_and_a_plain_one_does_not() {
    // Left out when false, so that a daemon from before shared streams understands the request.
    let plain = Request::Bytes {
        source: proto::DataSource::Fortuna,
        count: Some(5),
        shared: false,
    };
    let bytes = encoded(&Frame::Request(plain.clone()));
    assert!(!String::from_utf8_lossy(&bytes).contains("shared"));
    let shared = Request::Bytes {
        source: proto::DataSource::Fortuna,
        count: None,
        shared: true,
    };
    let bytes = encoded(&Frame::Request(shared.clone()));
    assert!(String::from_utf8_lossy(&bytes).contains(r#""shared":true"#));
    assert_eq!(
        Frame::decode(&bytes, MAX_FRAME_LEN).unwrap().unwrap().0,
        Frame::Request(shared)
    );
}

#[test]
fn data_header_matches_an_encoded_data_frame() {
    let frame = encoded(&Frame::Data(vec![7; 300]));
    assert_eq!(&frame[..6], &Frame::data_header(300));
}

#[test]
fn partial_frames_ask_for_more() {
    let bytes = encoded(&Frame::Request(Request::Health));
    for cut in 0..bytes.len() {
        assert_eq!(
            Frame::decode(&bytes[..cut], MAX_FRAME_LEN),
            Ok(None),
            "cut {cut}"
        );
    }
    let (frame, used) = Frame::decode(&bytes, MAX_FRAME_LEN).unwrap().unwrap();
    assert_eq!(frame, Frame::Request(Request::Health));
    assert_eq!(used, bytes.len());
}

#[test]
fn oversized_frame_is_refused_from_its_prefix_alone() {
    let err = Frame::decode(&[0, 0x10, 0, 0], proto::MAX_REQUEST_LEN).unwrap_err();
    assert!(matches!(err, proto::Error::TooLarge { len: 0x10_0000, .. }));
    assert_eq!(err.code(), ErrorCode::TooLarge);
}

#[test]
fn other_version_is_refused() {
    let mut bytes = encoded(&Frame::Request(Request::Status));
    bytes[4] = 2;
    let err = Frame::decode(&bytes, MAX_FRAME_LEN).unwrap_err();
    assert_eq!(err, proto::Error::Version(2));
    assert_eq!(err.code(), ErrorCode::UnsupportedVersion);
}

#[test]
fn malformed_frames_are_refused() {
    for (name, bytes) in [
        ("no header", vec![0, 0, 0, 1, 1]),
        ("unknown kind", vec![0, 0, 0, 2, 1, 0x7f]),
        ("bad json", vec![0, 0, 0, 3, 1, 1, b'{']),
        ("unknown verb", {
            let mut v = vec![0, 0, 0, 18, 1, 1];
            v.extend_from_slice(br#"{"verb":"dance"}"#);
            v
        }),
        ("a field on a verb without any", {
            let json = br#"{"verb":"status","x":1}"#;
            let mut v = vec![0, 0, 0, json.len() as u8 + 2, 1, 1];
            v.extend_from_slice(json);
            v
        }),
        ("a misspelt field", {
            let json = br#"{"verb":"bytes","source":"fortuna","cnt":5}"#;
            let mut v = vec![0, 0, 0, json.len() as u8 + 2, 1, 1];
            v.extend_from_slice(json);
            v
        }),
        ("short end", vec![0, 0, 0, 3, 1, 4, 0]),
        ("error without code", vec![0, 0, 0, 3, 1, 5, 0]),
    ] {
        let err = Frame::decode(&bytes, MAX_FRAME_LEN);
        assert!(
            matches!(err, Err(proto::Error::Malformed(_))),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn unknown_error_codes_from_a_newer_daemon_are_kept_as_unknown() {
    let bytes = vec![0, 0, 0, 4, 1, 5, 0x12, 0x34];
    let (frame, _) = Frame::decode(&bytes, MAX_FRAME_LEN).unwrap().unwrap();
    assert!(matches!(
        frame,
        Frame::Error {
            code: ErrorCode::Unknown,
            ..
        }
    ));
}

#[test]
fn error_codes_keep_their_numbers() {
    let codes = [
        (ErrorCode::Malformed, 1),
        (ErrorCode::UnsupportedVersion, 2),
        (ErrorCode::TooLarge, 3),
        (ErrorCode::InvalidArgument, 4),
        (ErrorCode::Unavailable, 5),
        (ErrorCode::PermissionDenied, 6),
        (ErrorCode::Unsupported, 7),
        (ErrorCode::ShuttingDown, 8),
        (ErrorCode::Internal, 9),
        (ErrorCode::TimedOut, 10),
        (ErrorCode::Busy, 11),
        (ErrorCode::NotFound, 12),
    ];
    for (code, number) in codes {
        assert_eq!(code as u16, number, "{code:?}");
        assert_eq!(ErrorCode::from_u16(number), code);
    }
    assert_eq!(ErrorCode::from_u16(13), ErrorCode::Unknown);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Frame::decode(&bytes, proto::MAX_REQUEST_LEN);
    }

    #[test]
    fn data_frames_round_trip(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let bytes = encoded(&Frame::Data(data.clone()));
        let (frame, used) = Frame::decode(&bytes, MAX_FRAME_LEN).unwrap().unwrap();
        prop_assert_eq!(frame, Frame::Data(data));
        prop_assert_eq!(used, bytes.len());
    }

    #[test]
    fn error_frames_round_trip(code in 1u16..=11, message in ".{0,64}") {
        let code = ErrorCode::from_u16(code);
        let bytes = encoded(&Frame::Error { code, message: message.clone() });
        let (frame, _) = Frame::decode(&bytes, MAX_FRAME_LEN).unwrap().unwrap();
        prop_assert_eq!(frame, Frame::Error { code, message });
    }

    #[test]
    fn ring_frames_round_trip(a in any::<u32>(), b in any::<u32>()) {
        for frame in [
            Frame::Ring { slots: a, slot_len: b },
            Frame::Filled { slot: a, len: b },
            Frame::Release { slot: a },
        ] {
            let bytes = encoded(&frame);
            let (back, used) = Frame::decode(&bytes, MAX_FRAME_LEN).unwrap().unwrap();
            prop_assert_eq!(back, frame);
            prop_assert_eq!(used, bytes.len());
        }
    }
}
