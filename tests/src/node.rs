//! A real `eyeflow node` child process: started with a configuration file, its API URL read
//! from the banner line it prints once it serves.

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
