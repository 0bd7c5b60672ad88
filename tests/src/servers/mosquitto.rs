//! A throwaway Mosquitto MQTT broker on a free loopback port, configured by a minimal file in
//! its own temporary directory, that can be stopped and started again on the same port.

use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{Process, find_binary, free_port, wait_for_port};

/// A running (or stopped) `mosquitto`; killed when dropped. The binary is
/// `$EYEFLOW_MOSQUITTO` or `mosquitto` found on the usual paths (Debian: `/usr/sbin`).
#[derive(Debug)]
pub struct Mosquitto {
    port: u16,
    dir: TempDir,
    process: Option<Process>,
}

impl Mosquitto {
    /// Starts a broker on a free port (anonymous clients allowed) and waits until it accepts
    /// connections.
    pub fn start() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("temporary directory for mosquitto");
        let config =
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n");
        std::fs::write(dir.path().join("mosquitto.conf"), config).expect("write mosquitto.conf");
        let mut broker = Self {
            port,
            dir,
            process: None,
        };
        broker.restart();
        broker
    }

    /// The port, kept across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the broker.
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Stops the broker if it runs, then starts a new one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let mut command = Command::new(find_binary("mosquitto", "EYEFLOW_MOSQUITTO"));
        command
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.process = Some(Process::spawn("mosquitto", command));
        wait_for_port("mosquitto", self.port, Duration::from_secs(10));
    }
}
