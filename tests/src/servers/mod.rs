//! Real servers for the integration tests: each is a child process on a free loopback port,
//! waited for until it accepts connections, and killed when its guard drops. The binaries
//! come from `scripts/install-services.sh` (the test command runs it).

pub mod llm;
pub mod mosquitto;
pub mod openbao;
pub mod redis;
pub mod tansu;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound once, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`, or panics after
/// `timeout` naming `what`.
pub fn wait_for_port(what: &str, port: u16, timeout: Duration) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within {timeout:?}");
}

/// The path of server binary `name`: `$env_var` if set, else the first match on `PATH`
/// (plus `/usr/sbin` and the installer's cache), else a panic that says how to install it.
pub fn find_binary(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from("/usr/sbin"));
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cache/eyeflow/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` not found (set {env_var} or run scripts/install-services.sh)")
        })
}

/// A child process killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Process {
    child: Option<Child>,
    what: String,
}

impl Process {
    /// Spawns `command`; `what` names it in panics.
    pub fn spawn(what: &str, mut command: Command) -> Self {
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self {
            child: Some(child),
            what: what.to_owned(),
        }
    }

    /// Kills the process now and waits for it to end.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What this process is.
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
