//! The serial gateway with real parts: the firmware's gateway image in QEMU
//! (mps2-an386, its UART0 on a TCP socket) and a real `eyeflow node` with a `[[devices]]`
//! entry on that socket. The program is deployed on HELLO, events run on the device and
//! their steps land in the node's audit chain (which verifies), a tampered and an unsigned
//! program are refused by the device with its reason while it keeps running the old one,
//! a device whose QEMU is killed is marked down, and one that comes back is reconnected to
//! and deployed again.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use eyeflow_tests::eventually;
use eyeflow_tests::node::{Workdir, repo};
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

#[test]
fn a_device_in_qemu_is_deployed_runs_events_into_the_audit_chain_and_refuses_tampered_programs() {
    build_firmware();
    let port = free_port();
    let device = qemu(port);
    let work = Workdir::new("");
    std::fs::write(work.path().join("threshold.ir"), vector("threshold_open")).expect("program");
    let config = std::fs::read_to_string(work.path().join("node.toml")).expect("config");
    std::fs::write(
        work.path().join("node.toml"),
        format!(
            "{config}\n[[devices]]\nid = \"{DEVICE}\"\nlink = \"tcp:127.0.0.1:{port}\"\nprograms = [\"threshold.ir\"]\nheartbeat_ms = 500\n"
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
            (device["status"] == "up" && device["program"] == "threshold@1.0.0").then_some(())
        },
    );

    // An event runs on the device: its steps are in the chain, as the server computes them.
    assert_eq!(api.event(&json!({"level": 82.5, "mode": "auto"})), 202);
    let expected = expected_steps("threshold_open");
    let entries = eventually("the device's steps in the audit chain", WAIT, || {
        let entries = api.device_entries();
        (entries.len() == expected.len()).then_some(entries)
    });
    let steps: Vec<(String, String)> = entries
        .iter()
        .map(|e| {
            (
                e["instruction_id"].as_str().unwrap_or_default().to_owned(),
                e["output_digest"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(steps, expected);
    assert!(entries.iter().all(|e| e["program_id"] == "threshold"));
    let verified = api.get("/api/audit/verify").expect("verify");
    assert_eq!(verified["ok"], true, "{verified}");

    // A tampered and an unsigned program are refused by the device, with its reason.
    for refused in ["refused_bit_flip", "refused_unsigned"] {
        let (status, body) = api.deploy(&vector(refused));
        assert_eq!(status, 422, "{refused}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("bad_signature"), "{refused}: {message}");
    }
    // ... and the next event still runs the old program.
    assert_eq!(api.event(&json!({"level": 82.5, "mode": "auto"})), 202);
    eventually("the second execution's steps", WAIT, || {
        (api.device_entries().len() == 2 * expected.len()).then_some(())
    });
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
