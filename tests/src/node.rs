//! The real `eyeflow` binary as a child process: a client command, or a node started with a
//! configuration file, its API URL read from the banner line it prints once it serves.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Starts `binary node --config node.toml` in `dir` (which holds `node.toml` and the data
/// directory it names) with `EYEFLOW_LOG` at `log`; returns the child and its API URL. The
/// rest of its standard output is drained on a thread.
pub fn start(binary: &Path, dir: &Path, log: &str) -> (Child, String) {
    let mut child = Command::new(binary)
        .args(["node", "--config", "node.toml"])
        .current_dir(dir)
        .env("EYEFLOW_LOG", log)
        .stdout(Stdio::piped())
        .spawn()
        .expect("eyeflow node starts");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let banner = lines.next().expect("banner").expect("line");
    let url = banner
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("URL in the banner")
        .to_owned();
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

/// Runs `binary args` in `cwd` and returns its trimmed standard output; panics with its
/// standard error when it fails.
pub fn run(binary: &Path, args: &[&str], cwd: &Path) -> String {
    let out = Command::new(binary)
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("eyeflow runs");
    assert!(
        out.status.success(),
        "eyeflow {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
