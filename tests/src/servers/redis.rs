//! A throwaway `redis-server` on a free loopback port, without persistence, that can be
//! stopped and started again on the same port (outage tests).

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{Process, find_binary, free_port, wait_for_port};

/// A running (or stopped) `redis-server`; killed when dropped. The binary is
/// `$EYEFLOW_REDIS_SERVER` or `redis-server` found on the usual paths.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    process: Option<Process>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it accepts connections.
    pub fn start() -> Self {
        let port = free_port();
        Self {
            port,
            process: Some(spawn(port)),
        }
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port, kept across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs (to freeze it with SIGSTOP, say).
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(Process::id)
    }

    /// Kills the server (its data is gone: it persists nothing).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Stops the server if it runs, then starts a new one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.process = Some(spawn(self.port));
    }
}

fn spawn(port: u16) -> Process {
    let mut command = Command::new(find_binary("redis-server", "EYEFLOW_REDIS_SERVER"));
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .args(["--protected-mode", "no", "--daemonize", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let process = Process::spawn("redis-server", command);
    wait_for_port("redis-server", port, Duration::from_secs(10));
    process
}
