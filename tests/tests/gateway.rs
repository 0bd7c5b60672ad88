//! The serial gateway with real parts: the firmware's gateway image in QEMU
//! (mps2-an386, its UART0 on a TCP socket) and a real `eyeflow node` with a `[[devices]]`
//! entry on that socket. The program is deployed on HELLO, events run on the device and
//! their steps land in the node's audit chain (which verifies), a tampered and an unsigned
//! program are refused by the device with its reason while it keeps running the old one,
//! a device whose QEMU is killed is marked down, and one that comes back is reconnected to
//! and deployed again. The same device on a pseudo-terminal (a `tty` link) is served alike.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eyeflow_runtime::events::FjallEventLog;
use eyeflow_runtime::store::{Durability, EmbeddedStore};
use eyeflow_tests::eventually;
use eyeflow_tests::node::{Workdir, repo};
use eyeflow_tests::servers::llm::Llm;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);
const DEVICE: &str = "qemu-1";

/// Builds the firmware's images (`scripts/firmware.sh build`, a no-op when fresh).
fn build_firmware() {
    let status = Command::new("bash")
        .args(["scripts/firmware.sh", "build"])
        .current_dir(repo())
        .status()
        .expect("scripts/firmware.sh runs");
    assert!(status.success(), "the firmware builds");
}

/// QEMU running the gateway image, killed when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts the gateway image with UART0 listening on `port` (`scripts/firmware.sh gateway`,
/// which execs QEMU: killing the child kills QEMU).
fn qemu(port: u16) -> Qemu {
    let child = Command::new("bash")
        .args(["scripts/firmware.sh", "gateway", &port.to_string()])
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("scripts/firmware.sh gateway starts QEMU");
    Qemu(child)
}

/// Starts the gateway image with UART0 on a pseudo-terminal; its path (as QEMU prints it
/// on stdout, which a thread then drains).
fn qemu_on_a_pty() -> (Qemu, String) {
    let mut child = Command::new("bash")
        .args(["scripts/firmware.sh", "gateway", "pty"])
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("scripts/firmware.sh gateway starts QEMU");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let path = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            let rest = line.strip_prefix("char device redirected to ")?;
            Some(rest.split(' ').next()?.to_owned())
        })
        .expect("QEMU names its pseudo-terminal");
    std::thread::spawn(move || lines.for_each(drop));
    (Qemu(child), path)
}

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(
        repo()
            .join("firmware/vectors")
            .join(name)
            .join("program.ir"),
    )
    .expect("the conformance vectors")
}

struct Api {
    url: String,
    admin: String,
    operator: String,
    client: reqwest::blocking::Client,
}

impl Api {
    fn get(&self, path: &str) -> Option<Value> {
        let response = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.admin)
            .send()
            .ok()?;
        serde_json::from_str(&response.text().ok()?).ok()
    }

    fn device(&self) -> Option<Value> {
        self.get("/api/health")?["devices"][0]
            .as_object()
            .cloned()
            .map(Value::Object)
    }

    fn deploy(&self, program: &[u8]) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}/api/devices/{DEVICE}/programs", self.url))
            .bearer_auth(&self.admin)
            .body(program.to_vec())
            .send()
            .expect("deploy");
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(&response.text().expect("body")).expect("JSON"),
        )
    }

    fn event(&self, body: &Value) -> u16 {
        self.client
            .post(format!("{}/api/devices/{DEVICE}/events", self.url))
            .bearer_auth(&self.operator)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .expect("event")
            .status()
            .as_u16()
    }

    /// The device's audit entries.
    fn device_entries(&self) -> Vec<Value> {
        let entries = self.get("/api/audit?from=0&limit=1000").unwrap_or_default();
        entries["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["entry"].clone())
            .filter(|e| e["node_id"] == format!("device/{DEVICE}"))
            .collect()
    }
}

/// `step` lines of an expected trace as (instruction id, digest).
fn expected_steps(name: &str) -> Vec<(String, String)> {
    let trace = std::fs::read_to_string(
        repo()
            .join("firmware/vectors")
            .join(name)
            .join("expected.trace"),
    )
    .expect("expected trace");
    trace
        .lines()
        .filter(|l| l.starts_with("step "))
        .map(|l| {
            let words: Vec<&str> = l.split(' ').collect();
            (words[2].to_owned(), words[6].to_owned())
        })
        .collect()
}

/// A device in QEMU on a free port and a node (config `extra` plus the device, which runs
/// the program of vector `program`), up and running it.
fn device_and_node(
    program: &str,
    program_id: &str,
    extra: &str,
) -> (Qemu, u16, Workdir, Child, Api) {
    build_firmware();
    let port = free_port();
    let device = qemu(port);
    let (work, node, api) = node_for(&format!("tcp:127.0.0.1:{port}"), program, program_id, extra);
    (device, port, work, node, api)
}

/// A node whose device on `link` runs the program of vector `program`, once it does.
fn node_for(link: &str, program: &str, program_id: &str, extra: &str) -> (Workdir, Child, Api) {
    let work = Workdir::new(extra);
    std::fs::write(work.path().join("device.ir"), vector(program)).expect("program");
    let config = std::fs::read_to_string(work.path().join("node.toml")).expect("config");
    std::fs::write(
        work.path().join("node.toml"),
        format!(
            "{config}\n[[devices]]\nid = \"{DEVICE}\"\nlink = \"{link}\"\nprograms = [\"device.ir\"]\nheartbeat_ms = 500\n"
        ),
    )
    .expect("config");
    let (node, url) = work.start();
    let api = Api {
        url,
        admin: work.admin.clone(),
        operator: work.operator.clone(),
        client: reqwest::blocking::Client::new(),
    };
    // Deployed on HELLO: the device restarts on it and says so.
    eventually(
        "the device is up and runs the deployed program",
        WAIT,
        || {
            let device = api.device()?;
            (device["status"] == "up" && device["program"] == program_id).then_some(())
        },
    );
    (work, node, api)
}

/// The device's first `count` audit entries, once there are that many.
fn device_entries(api: &Api, count: usize) -> Vec<Value> {
    eventually("the device's steps in the audit chain", WAIT, || {
        let entries = api.device_entries();
        (entries.len() >= count).then_some(entries)
    })
}

/// The (instruction id, output digest) of audit `entries`.
fn steps_of(entries: &[Value]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e["instruction_id"].as_str().unwrap_or_default().to_owned(),
                e["output_digest"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_device_in_qemu_is_deployed_runs_events_into_the_audit_chain_and_refuses_tampered_programs() {
    let (device, port, work, node, api) = device_and_node("threshold_open", "threshold@1.0.0", "");

    // An event runs on the device: its steps are in the chain, as the server computes them.
    assert_eq!(api.event(&json!({"level": 82.5, "mode": "auto"})), 202);
    let expected = expected_steps("threshold_open");
    let entries = device_entries(&api, expected.len());
    assert_eq!(steps_of(&entries), expected);
    assert!(entries.iter().all(|e| e["program_id"] == "threshold"));
    let verified = api.get("/api/audit/verify").expect("verify");
    assert_eq!(verified["ok"], true, "{verified}");

    // A tampered and an unsigned program are refused by the device, with its reason, and
    // so are signed programs it cannot hold (refused once loading has begun, in the
    // running program's place: the device loads its program again).
    for (refused, reason) in [
        ("refused_bit_flip", "bad_signature"),
        ("refused_unsigned", "bad_signature"),
        ("refused_capacity", "capacity"),
        ("refused_not_mcu", "not_mcu"),
    ] {
        let (status, body) = api.deploy(&vector(refused));
        assert_eq!(status, 422, "{refused}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{refused}: {message}");
    }
    // ... and the next event still runs the old program, step for step.
    assert_eq!(api.event(&json!({"level": 82.5, "mode": "auto"})), 202);
    let entries = device_entries(&api, 2 * expected.len());
    assert_eq!(entries.len(), 2 * expected.len());
    assert_eq!(steps_of(&entries[expected.len()..]), expected);
    let device_now = api.device().expect("health");
    assert_eq!(device_now["program"], "threshold@1.0.0");

    // A device that goes silent is down.
    drop(device);
    eventually("the killed device is down", WAIT, || {
        (api.device()?["status"] == "down").then_some(())
    });

    // A device that comes back (a fresh one: no program) is reconnected to and deployed
    // again: the last program an operator deployed, else the configured ones.
    let _device = qemu(port);
    eventually(
        "the restarted device is up with the program again",
        WAIT,
        || {
            let device = api.device()?;
            (device["status"] == "up" && device["program"] == "threshold@1.0.0").then_some(())
        },
    );
    work.stop(node);
}

#[test]
fn a_devices_llm_call_is_answered_by_a_real_endpoint_and_its_event_reaches_the_event_log() {
    // The endpoint answers `high` for the first tank (after 200 ms: a RUN sent meanwhile
    // would hold the device's reader), something outside the schema else.
    let llm = Llm::start(|prompt| {
        if prompt.contains("82.5") {
            std::thread::sleep(Duration::from_millis(200));
            r#""high""#.to_owned()
        } else {
            r#""banana""#.to_owned()
        }
    });
    let extra = format!("[llm]\nbase_url = \"{}\"\n", llm.base_url());
    let (_device, _port, work, node, api) =
        device_and_node("llm_answered", "tank-llm@1.0.0", &extra);

    // The device's LLM_CALL sends its frozen context; the node asks the endpoint, checks
    // the answer against the schema and sends it back: the device's steps are the server's.
    assert_eq!(api.event(&json!({"level": 82.5, "site": "north"})), 202);
    let expected = expected_steps("llm_answered");
    let entries = device_entries(&api, expected.len());
    assert_eq!(steps_of(&entries), expected);
    assert_eq!(llm.prompts(), ["Tank level 82.5 %: answer low or high."]);

    // An answer outside the schema is `invalid_output` for the device: its fallback value.
    assert_eq!(api.event(&json!({"level": 10, "site": "south"})), 202);
    let entries = device_entries(&api, 2 * expected.len());
    let classify = &entries[expected.len()];
    assert_eq!(classify["instruction_id"], "classify");
    assert_eq!(classify["fallback"], "fallback_value", "{classify}");

    // A burst: the node holds each event until the device's execution before it ended, so
    // every LLM_CALL gets its answer (none times out behind the next RUN).
    for _ in 0..3 {
        assert_eq!(api.event(&json!({"level": 82.5, "site": "north"})), 202);
    }
    let entries = device_entries(&api, 5 * expected.len());
    for run in entries[2 * expected.len()..].chunks(expected.len()) {
        assert_eq!(steps_of(run), expected);
    }
    let verified = api.get("/api/audit/verify").expect("verify");
    assert_eq!(verified["ok"], true, "{verified}");
    work.stop(node);

    // Both EMIT_EVENTs reached the node's event sink (its event log), in order.
    let store = EmbeddedStore::open(&work.data()).expect("the node's store");
    let events = FjallEventLog::new(store, Durability::Buffered)
        .read("tank.alerts", 0, 10)
        .expect("the event log");
    let sent: Vec<(&str, &Value)> = events
        .iter()
        .map(|e| (e.key.as_str(), &e.payload))
        .collect();
    assert_eq!(
        sent,
        [
            ("north", &json!({"level": 82.5, "state": "high"})),
            ("south", &json!({"level": 10, "state": "unknown"})),
            ("north", &json!({"level": 82.5, "state": "high"})),
            ("north", &json!({"level": 82.5, "state": "high"})),
            ("north", &json!({"level": 82.5, "state": "high"})),
        ]
    );
}

#[test]
fn a_device_on_a_serial_line_is_deployed_and_runs_events() {
    // A tty link (here QEMU's UART0 on a pseudo-terminal) is served as a socket is: the
    // program is deployed on HELLO, and an event's steps are the server's.
    build_firmware();
    let (_device, tty) = qemu_on_a_pty();
    let (work, node, api) = node_for(&tty, "threshold_open", "threshold@1.0.0", "");
    assert_eq!(api.event(&json!({"level": 82.5, "mode": "auto"})), 202);
    let expected = expected_steps("threshold_open");
    assert_eq!(steps_of(&device_entries(&api, expected.len())), expected);
    work.stop(node);
}
