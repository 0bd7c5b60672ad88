use std::vec::Vec;

use super::*;

fn frame_of(message: &Message<'_>, seq: u8) -> Vec<u8> {
    let mut out = [0u8; 512];
    let len = message.encode(seq, &mut out).expect("encodes");
    out[..len].to_vec()
}

/// Feeds `bytes`, then idles, and returns the frames decoded, re-encoded for comparison.
fn decode_all<const N: usize>(decoder: &mut Decoder<[u8; N]>, bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for &byte in bytes {
        decoder.push(byte);
        drain(decoder, &mut frames);
    }
    decoder.idle();
    drain(decoder, &mut frames);
    frames
}

fn drain<const N: usize>(decoder: &mut Decoder<[u8; N]>, frames: &mut Vec<Vec<u8>>) {
    while let Some(frame) = decoder.next_frame() {
        let mut out = [0u8; 512];
        let len = write_frame(&mut out, frame.kind, frame.seq, frame.payload).expect("fits");
        frames.push(out[..len].to_vec());
    }
}

fn samples() -> Vec<Vec<u8>> {
    static CAPS: [Capability<'static>; 2] = [
        Capability {
            id: "gpio",
            version: "1.0.0",
        },
        Capability {
            id: "adc",
            version: "1.0.0",
        },
    ];
    static FIELDS: [(&str, Value<'static>); 3] = [
        ("level", Value::Num(82.5)),
        ("mode", Value::Str("auto")),
        ("tank.ok", Value::Bool(true)),
    ];
    let messages = [
        Message::Hello {
            device: "pump-1",
            firmware: "0.1.0",
            capabilities: Capabilities::List(&CAPS),
            program: Some(ProgramRef {
                id: "threshold",
                version: "1.0.0",
            }),
            started: false,
        },
        Message::Hello {
            device: "pump-2",
            firmware: "0.1.0",
            capabilities: Capabilities::List(&[]),
            program: None,
            started: true,
        },
        Message::Loaded(ProgramRef {
            id: "threshold",
            version: "1.0.0",
        }),
        Message::Refused {
            reason: "bad_signature",
        },
        Message::Trace {
            execution: 7,
            line: "step 1 check EVAL 1 ok 6e340b9cffb37a98",
        },
        Message::Event {
            topic: "alarms",
            key: "pump-1",
            fields: Fields::List(&FIELDS),
        },
        Message::LlmRequest {
            request: 3,
            program: ProgramRef {
                id: "threshold",
                version: "1.0.0",
            },
            instruction: "ask",
            context: Fields::List(&FIELDS),
        },
        Message::Ping,
        Message::Deploy {
            program: &[1, 2, 3, 0xEF, 0x5A],
        },
        Message::Run {
            fields: Fields::List(&FIELDS),
        },
        Message::LlmAnswer {
            request: 3,
            result: Ok(Value::Str("open")),
        },
        Message::LlmAnswer {
            request: 4,
            result: Err(ErrorClass::InvalidOutput),
        },
        Message::Pong,
    ];
    messages
        .iter()
        .enumerate()
        .map(|(seq, m)| frame_of(m, seq as u8))
        .collect()
}

#[test]
fn crc32_is_zlibs() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

#[test]
fn crc32_by_parts_is_crc32() {
    let bytes = b"123456789";
    for cut in 0..=bytes.len() {
        let register = crc32_update(crc32_update(!0, &bytes[..cut]), &bytes[cut..]);
        assert_eq!(!register, crc32(bytes));
    }
}

#[test]
fn every_message_round_trips() {
    for bytes in samples() {
        let mut decoder = Decoder::new([0u8; 256]);
        for &b in &bytes {
            decoder.push(b);
        }
        let frame = decoder.next_frame().expect("a frame");
        let message = Message::decode(&frame).expect("decodes");
        assert_eq!(frame_of(&message, frame.seq), bytes);
        // A device reads what a node sends, as the node wrote it, and nothing else.
        match Message::decode_for_device(&frame) {
            Ok(read) => {
                assert!(frame.kind & 0x80 != 0, "{read:?}");
                assert_eq!(read, message);
            }
            Err(e) => assert!(frame.kind & 0x80 == 0, "{message:?}: {e}"),
        }
        assert_eq!(decoder.counters(), Counters::default());
    }
}

#[test]
fn decoded_fields_read_back() {
    let bytes = &samples()[9];
    let frame = Frame {
        kind: bytes[2],
        seq: bytes[3],
        payload: &bytes[HEADER..bytes.len() - TRAILER],
    };
    let Ok(Message::Run { fields }) = Message::decode(&frame) else {
        panic!("a RUN");
    };
    let read: Vec<_> = fields.iter().collect();
    assert_eq!(
        read,
        [
            ("level", Value::Num(82.5)),
            ("mode", Value::Str("auto")),
            ("tank.ok", Value::Bool(true)),
        ]
    );
}

#[test]
fn a_stream_of_frames_decodes_in_order() {
    let frames = samples();
    let stream: Vec<u8> = frames.concat();
    let mut decoder = Decoder::new([0u8; 256]);
    assert_eq!(decode_all(&mut decoder, &stream), frames);
    assert_eq!(decoder.counters().total(), 0);
}

#[test]
fn every_bit_flip_drops_only_its_frame() {
    let frames = samples();
    let victim = 4;
    let before: Vec<u8> = frames[..victim].concat();
    let after: Vec<u8> = frames[victim + 1..].concat();
    for bit in 0..frames[victim].len() * 8 {
        let mut bad = frames[victim].clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let stream = [before.clone(), bad, after.clone()].concat();
        let mut decoder = Decoder::new([0u8; 256]);
        let got = decode_all(&mut decoder, &stream);
        let mut want = frames.clone();
        want.remove(victim);
        assert_eq!(got, want, "bit {bit}");
        assert!(decoder.counters().total() >= 1, "bit {bit} counted");
    }
}

#[test]
fn a_truncated_frame_costs_only_itself() {
    let frames = samples();
    for cut in 1..frames[5].len() {
        let stream = [
            frames[4].clone(),
            frames[5][..cut].to_vec(),
            frames[6].clone(),
            frames[7].clone(),
        ]
        .concat();
        let mut decoder = Decoder::new([0u8; 256]);
        let got = decode_all(&mut decoder, &stream);
        assert_eq!(
            got,
            [frames[4].clone(), frames[6].clone(), frames[7].clone()],
            "cut at {cut}"
        );
        assert!(decoder.counters().total() >= 1, "cut at {cut} counted");
    }
}

#[test]
fn garbage_between_frames_is_skipped_and_counted() {
    let frames = samples();
    let garbage = [0x00, 0xEF, 0xEF, 0x5A, 0x01, 0x02, 0x00, 0x10, 0xFF, 0xEF];
    let stream = [
        garbage.to_vec(),
        frames[0].clone(),
        garbage.to_vec(),
        frames[1].clone(),
        garbage.to_vec(),
    ]
    .concat();
    let mut decoder = Decoder::new([0u8; 256]);
    let got = decode_all(&mut decoder, &stream);
    assert_eq!(got, [frames[0].clone(), frames[1].clone()]);
    assert!(decoder.counters().total() >= 2);
}

#[test]
fn an_oversize_length_is_refused_and_resynchronised() {
    let frames = samples();
    let mut huge = frames[8].clone();
    huge[4..6].copy_from_slice(&0xFFFFu16.to_be_bytes());
    let stream = [huge, frames[7].clone()].concat();
    let mut decoder = Decoder::new([0u8; 64]);
    let got = decode_all(&mut decoder, &stream);
    assert_eq!(got, [frames[7].clone()]);
    assert!(decoder.counters().oversize >= 1);
}

#[test]
fn a_full_buffer_of_noise_never_panics() {
    let mut decoder = Decoder::new([0u8; 16]);
    let mut x = 0x1234_5678u32;
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        decoder.push(x as u8);
        while decoder.next_frame().is_some() {}
    }
    assert!(decoder.counters().total() > 0);
}

#[test]
fn malformed_payloads_are_refused() {
    let frame = |kind, payload| Frame {
        kind,
        seq: 0,
        payload,
    };
    assert!(matches!(
        Message::decode(&frame(0x42, &[])),
        Err(Error::Frame { .. })
    ));
    assert!(matches!(
        Message::decode(&frame(kind::PING, &[0])),
        Err(Error::Frame { .. })
    ));
    assert!(matches!(
        Message::decode(&frame(kind::REFUSED, &[5, b'a'])),
        Err(Error::Truncated { .. })
    ));
    assert!(matches!(
        Message::decode(&frame(kind::RUN, &[1, 2, b'a', b'.', 0])),
        Err(Error::BadPath { .. })
    ));
    assert!(matches!(
        Message::decode(&frame(kind::LLM_ANSWER, &[0, 0, 0, 1, 1, 99])),
        Err(Error::Frame { .. })
    ));
    assert!(matches!(
        Message::decode(&frame(kind::RUN, &[17])),
        Err(Error::Frame { .. })
    ));
    // HELLO "d", "1", no capability, no program: then its start flag, 00 or 01 only.
    let hello = [1, b'd', 1, b'1', 0, 0];
    assert!(matches!(
        Message::decode(&frame(kind::HELLO, &hello)),
        Err(Error::Truncated { at: 6 })
    ));
    let flagged = |flag: u8| [&hello[..], &[flag]].concat();
    let (bad, started) = (flagged(2), flagged(1));
    assert!(matches!(
        Message::decode(&frame(kind::HELLO, &bad)),
        Err(Error::Frame { .. })
    ));
    assert!(matches!(
        Message::decode(&frame(kind::HELLO, &started)),
        Ok(Message::Hello { started: true, .. })
    ));
}

#[test]
fn a_message_too_large_for_the_output_is_an_error() {
    let mut out = [0u8; 12];
    let message = Message::Deploy { program: &[0; 8] };
    assert!(matches!(
        message.encode(0, &mut out),
        Err(Error::Frame { .. })
    ));
}
