//! The node side of the gateway against a fake device speaking the codec over TCP (the
//! real firmware in QEMU is `tests/tests/gateway.rs`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use eyeflow_actors::ports::{CallError, LlmRequest};
use eyeflow_ir::pb::{DispatchMetadata, DynamicSlot, IrOpcode};
use eyeflow_mcu::Value;
use eyeflow_mcu::frame::{Capabilities, Decoder, Fields, MAX_FRAME, Message, ProgramRef, kind};
use eyeflow_mcu::trace::ErrorClass;
use eyeflow_tests::eventually;
use serde_json::json;

use super::record::Scalar;
use super::*;
use crate::node::{Node, NodeConfig};

const WAIT: Duration = Duration::from_secs(10);

/// A signed program with an LLM_CALL `ask` whose answer must be `open` or `close`.
fn program(version: &str) -> Vec<u8> {
    program_granting(version, true)
}

/// [`program`], its LLM_CALL carrying `can_call_external` or not.
fn program_granting(version: &str, call_external: bool) -> Vec<u8> {
    let mut program = eyeflow_ir::testing::sample_program();
    program.version = version.to_owned();
    let mut ask = eyeflow_ir::pb::IrInstruction {
        instruction_id: "ask".into(),
        opcode: IrOpcode::LlmCall as i32,
        permissions: Some(eyeflow_ir::pb::PermissionFlags {
            can_call_external: call_external,
            ..Default::default()
        }),
        ..Default::default()
    };
    ask.dispatch_metadata = Some(DispatchMetadata {
        model: "m".into(),
        prompt_template: "level {{level}}".into(),
        output_schema: r#"{"type":"string","enum":["open","close"]}"#.into(),
        dynamic_slots: vec![DynamicSlot {
            slot_id: "level".into(),
            source_type: "runtime".into(),
            source_key: "event.level".into(),
        }],
        ..Default::default()
    });
    program.instructions.push(ask);
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    eyeflow_ir::keys::sign(&mut program, &key);
    eyeflow_ir::encode(&program)
}

/// The device end of a link: frames out, messages in.
struct Fake {
    stream: TcpStream,
    decoder: Decoder<Vec<u8>>,
    seq: u8,
    /// The kinds of every frame received, in order.
    seen: Vec<u8>,
}

impl Fake {
    fn accept(listener: &TcpListener) -> Self {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Self {
            stream,
            decoder: Decoder::new(vec![0; MAX_FRAME]),
            seq: 0,
            seen: Vec::new(),
        }
    }

    fn send(&mut self, message: &Message<'_>) {
        let mut out = vec![0; MAX_FRAME];
        let len = message.encode(self.seq, &mut out).unwrap();
        self.seq = self.seq.wrapping_add(1);
        self.stream.write_all(&out[..len]).unwrap();
    }

    /// HELLO, running `program`; `started` when it just started.
    fn hello(&mut self, program: Option<ProgramRef<'_>>, started: bool) {
        self.send(&Message::Hello {
            device: "pump-1",
            firmware: "0.1.0",
            capabilities: Capabilities::List(&[]),
            program,
            started,
        });
    }

    /// The next frame of `kind` (others are skipped), as its kind and payload.
    fn expect(&mut self, want: u8) -> Vec<u8> {
        eventually(&format!("a frame {want:#04x} from the node"), WAIT, || {
            let mut buf = [0u8; 1024];
            if let Ok(n) = self.stream.read(&mut buf) {
                buf[..n].iter().for_each(|&b| self.decoder.push(b));
            }
            while let Some(frame) = self.decoder.next_frame() {
                self.seen.push(frame.kind);
                if frame.kind == want {
                    return Some(frame.payload.to_vec());
                }
            }
            None
        })
    }
}

struct Setup {
    node: Node,
    listener: TcpListener,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let signed = Signed::new(&program("1.0.0")).unwrap();
    let mut config = NodeConfig::embedded(dir.path());
    config.durability = Durability::Buffered;
    config.devices = vec![DeviceConfig {
        id: "pump-1".into(),
        link: Link::Tcp(listener.local_addr().unwrap().to_string()),
        programs: vec![signed],
        heartbeat: Duration::from_millis(100),
    }];
    let node = Node::start(config).unwrap();
    Setup {
        node,
        listener,
        _dir: dir,
    }
}

fn device_status(node: &Node) -> &'static str {
    node.devices().health()[0].status
}

#[test]
fn a_device_is_deployed_on_hello_and_its_reports_reach_the_node() {
    let Setup {
        node,
        listener,
        _dir,
    } = setup();
    assert_eq!(device_status(&node), "down");
    let tree = node.actors().unwrap();
    assert!(
        tree.iter()
            .any(|a| a.path == "node/devices/pump-1" && a.kind == "device"),
        "{tree:?}"
    );
    let mut device = Fake::accept(&listener);
    device.hello(None, true);
    device.expect(kind::PONG);
    let deployed = device.expect(kind::DEPLOY);
    assert_eq!(deployed, program("1.0.0"));
    device.send(&Message::Loaded(RUNNING));
    // Restarted on it, the device greets again.
    device.hello(Some(RUNNING), true);
    device.expect(kind::PONG);
    eventually("the device is up and runs the program", WAIT, || {
        let health = &node.devices().health()[0];
        (health.status == "up" && health.program.as_deref() == Some("valve-guard@1.0.0"))
            .then_some(())
    });

    // An event becomes a RUN with its fields.
    let devices = node.devices();
    node.run_on_device("pump-1", &json!({"level": 90, "mode": "auto"}))
        .unwrap();
    let run = device.expect(kind::RUN);
    let frame = eyeflow_mcu::frame::Frame {
        kind: kind::RUN,
        seq: 0,
        payload: &run,
    };
    let Ok(Message::Run { fields }) = Message::decode(&frame) else {
        panic!("a RUN");
    };
    assert_eq!(
        fields.iter().collect::<Vec<_>>(),
        [("level", Value::Num(90.0)), ("mode", Value::Str("auto"))]
    );

    // Its trace: one audit entry per step, in a chain that verifies.
    for line in [
        "step 1 read_pressure LOAD_RESOURCE 1 ok 1234567890abcdef",
        "step 2 too_high EVAL 1 ok 6e340b9cffb37a98",
        "end completed 6e340b9cffb37a98",
    ] {
        device.send(&Message::Trace { execution: 1, line });
    }
    let entries = eventually("the device's steps in the audit chain", WAIT, || {
        let entries: Vec<_> = node
            .audit()
            .entries(0, 100)
            .unwrap()
            .into_iter()
            .filter(|e| e.entry.node_id == "device/pump-1")
            .collect();
        (entries.len() == 2).then_some(entries)
    });
    assert_eq!(entries[0].entry.instruction_id, "read_pressure");
    assert_eq!(entries[1].entry.output_digest, "6e340b9cffb37a98");
    assert_eq!(
        entries[0].entry.program_sha256.as_deref(),
        Some(Signed::new(&program("1.0.0")).unwrap().sha256.as_str())
    );
    crate::audit::verify(node.store(), None).unwrap().unwrap();

    // An EMIT_EVENT lands in the node's event log.
    device.send(&Message::Event {
        topic: "alarms",
        key: "pump-1",
        fields: Fields::List(&[("level", Value::Num(90.0)), ("tank.ok", Value::Bool(false))]),
    });
    let events = eventually("the device's event in the event log", WAIT, || {
        let events = node.event_log().read("alarms", 0, 10).unwrap();
        (!events.is_empty()).then_some(events)
    });
    assert_eq!(
        events[0].payload,
        json!({"level": 90, "tank": {"ok": false}})
    );

    // A refused deploy says the device's reason, also when the device greeted again
    // meanwhile without starting (too busy checking the program to read a PONG in time).
    let refusing = std::thread::spawn(move || {
        device.expect(kind::DEPLOY);
        device.hello(Some(RUNNING), false);
        device.expect(kind::PONG);
        device.send(&Message::Refused {
            reason: "bad_signature",
        });
        device
    });
    let answer = node.deploy_to_device("pump-1", &program("2.0.0")).unwrap();
    assert_eq!(
        answer,
        Deployment::Refused {
            reason: "bad_signature".into()
        }
    );
    let mut device = refusing.join().unwrap();

    // A device that starts again will not answer what it was asked before its start.
    let restarting = std::thread::spawn(move || {
        device.expect(kind::DEPLOY);
        device.hello(Some(RUNNING), true);
        device.expect(kind::PONG);
        device
    });
    let err = node
        .deploy_to_device("pump-1", &program("2.0.0"))
        .unwrap_err();
    assert!(
        err.to_string().contains("restarted before it answered"),
        "{err}"
    );
    let mut device = restarting.join().unwrap();

    // Garbage and corrupt frames are counted, and the link goes on.
    device
        .stream
        .write_all(&[0x00, 0xEF, 0x5A, 0x07, 0x00])
        .unwrap();
    device.send(&Message::Ping);
    eventually("bad frames counted", WAIT, || {
        (devices.health()[0].bad_frames > 0).then_some(())
    });
    device.send(&Message::Ping);
    device.expect(kind::PONG);

    // Silence: down after three missed heartbeats.
    eventually("the silent device is down", WAIT, || {
        (device_status(&node) == "down").then_some(())
    });
    drop(device);
    node.shutdown().unwrap();
}

/// The program the configured device runs.
const RUNNING: ProgramRef<'static> = ProgramRef {
    id: "valve-guard",
    version: "1.0.0",
};

/// A node and its device, which just started running the configured program (greeted).
fn running_device() -> (Setup, Fake) {
    let setup = setup();
    let mut device = Fake::accept(&setup.listener);
    device.hello(Some(RUNNING), true);
    device.expect(kind::PONG);
    (setup, device)
}

#[test]
fn a_device_that_runs_the_program_gets_no_deploy_and_unknown_devices_are_refused() {
    let (Setup { node, _dir, .. }, mut device) = running_device();
    // The node answers in order: a DEPLOY would come before the PING's PONG.
    device.send(&Message::Ping);
    device.expect(kind::PONG);
    assert_eq!(device.seen, [kind::PONG, kind::PONG]);
    let err = node
        .deploy_to_device("pump-9", &program("1.0.0"))
        .unwrap_err();
    assert!(matches!(err, crate::Error::NotFound { .. }), "{err}");
    let err = node
        .run_on_device("pump-1", &json!({"xs": [1, 2]}))
        .unwrap_err();
    assert!(err.to_string().contains("`xs` is a list"), "{err}");
    node.shutdown().unwrap();
}

struct Answers;

#[async_trait::async_trait]
impl LlmPort for Answers {
    async fn complete(&self, request: &LlmRequest) -> Result<String, CallError> {
        let prompt = &request.messages.last().unwrap().content;
        // The output schema makes it a JSON answer.
        Ok(if prompt == "level 90" {
            "\"open\""
        } else {
            "\"banana\""
        }
        .to_owned())
    }
}

#[tokio::test]
async fn an_llm_call_is_served_from_the_program_and_its_answer_validated() {
    let signed = Signed::new(&program("1.0.0")).unwrap();
    let context = vec![("level".to_owned(), Scalar::Num(90.0))];
    let answer = llm::serve(&Answers, Some(&signed), "ask", &context).await;
    assert_eq!(answer, Ok(Scalar::Str("open".into())));
    let context = vec![("level".to_owned(), Scalar::Num(12.0))];
    let invalid = llm::serve(&Answers, Some(&signed), "ask", &context).await;
    assert_eq!(invalid.unwrap_err().class, ErrorClass::InvalidOutput);
    let unknown = llm::serve(&Answers, None, "ask", &context).await;
    assert_eq!(unknown.unwrap_err().class, ErrorClass::InvalidInput);
    let not_llm = llm::serve(&Answers, Some(&signed), "too_high", &context).await;
    assert_eq!(not_llm.unwrap_err().class, ErrorClass::InvalidInput);
    // A program whose LLM_CALL does not carry `can_call_external` (the server refuses it at
    // deploy; a device may still run it) is not served: the model is never asked.
    let ungranted = Signed::new(&program_granting("1.0.0", false)).unwrap();
    let context = vec![("level".to_owned(), Scalar::Num(90.0))];
    let denied = llm::serve(&Panics, Some(&ungranted), "ask", &context).await;
    let denied = denied.unwrap_err();
    assert_eq!(denied.class, ErrorClass::Denied);
    assert!(
        denied.message.contains("can_call_external"),
        "{}",
        denied.message
    );
}

/// An LLM that must never be asked.
struct Panics;

#[async_trait::async_trait]
impl LlmPort for Panics {
    async fn complete(&self, _: &LlmRequest) -> Result<String, CallError> {
        panic!("the model was asked")
    }
}

/// The fields of a RUN payload.
fn run_fields(payload: &[u8]) -> Vec<(String, Value<'static>)> {
    let frame = eyeflow_mcu::frame::Frame {
        kind: kind::RUN,
        seq: 0,
        payload,
    };
    let Ok(Message::Run { fields }) = Message::decode(&frame) else {
        panic!("a RUN");
    };
    fields
        .iter()
        .map(|(p, v)| {
            let v = match v {
                Value::Num(n) => Value::Num(n),
                other => panic!("a number: {other:?}"),
            };
            (p.to_owned(), v)
        })
        .collect()
}

#[test]
fn a_run_waits_until_the_devices_execution_ends() {
    let (Setup { node, _dir, .. }, mut device) = running_device();
    node.run_on_device("pump-1", &json!({"level": 1})).unwrap();
    node.run_on_device("pump-1", &json!({"level": 2})).unwrap();
    let first = device.expect(kind::RUN);
    assert_eq!(run_fields(&first), [("level".to_owned(), Value::Num(1.0))]);
    // Both were accepted before this PING: the node answers in order, so a second RUN
    // sent at once would come before the PONG.
    device.send(&Message::Ping);
    device.expect(kind::PONG);
    assert_eq!(device.seen, [kind::PONG, kind::RUN, kind::PONG]);
    // A deploy waits too, and goes before the next RUN.
    let deploying = {
        let node = node.clone();
        std::thread::spawn(move || node.deploy_to_device("pump-1", &program("2.0.0")))
    };
    eventually("the deploy waits", WAIT, || {
        (node.devices().health()[0].waiting == 2).then_some(())
    });
    device.send(&Message::Ping);
    device.expect(kind::PONG);
    assert_eq!(device.seen, [kind::PONG, kind::RUN, kind::PONG, kind::PONG]);
    device.send(&Message::Trace {
        execution: 1,
        line: "end completed 6e340b9cffb37a98",
    });
    device.expect(kind::DEPLOY);
    device.send(&Message::Refused {
        reason: "bad_signature",
    });
    let answer = deploying.join().unwrap().unwrap();
    assert!(matches!(answer, Deployment::Refused { .. }), "{answer:?}");
    let second = device.expect(kind::RUN);
    assert_eq!(run_fields(&second), [("level".to_owned(), Value::Num(2.0))]);
    node.shutdown().unwrap();
}
