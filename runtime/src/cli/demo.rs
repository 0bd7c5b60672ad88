//! `eyeflow demo`: a node on embedded defaults with the bundled plugins and the example
//! rules, fed simulated sensor events, ending with a per-rule summary and the audit chain
//! verified. The rules and plugins are found beside the binary, so it runs from any folder.

use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use eyeflow_compiler::CompileOptions;
use eyeflow_ir::keys;
use eyeflow_ir::pb::{IrOpcode, LlmIrProgram};
use eyeflow_runtime::node::{Node, NodeConfig};

use super::options::{CliResult, refused};

/// `eyeflow demo` options.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Folder of rule files (default: the `examples/rules` of the eyeflow folder the binary
    /// is in).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Node data directory (default: a fresh temporary one). Re-running on the same
    /// directory resumes interrupted executions and skips journaled events.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Number of simulated sensor events.
    #[arg(long, default_value_t = 300)]
    events: u32,
    /// Directory of built plugins (`<name>.wasm` + `<name>.json`; default: those of the
    /// eyeflow folder the binary is in, built by its `scripts/build-plugins.sh` if needed).
    #[arg(long)]
    plugins: Option<PathBuf>,
    /// Scheduler worker slots.
    #[arg(long)]
    workers: Option<usize>,
}

/// The main job: starts a node on embedded defaults, installs the bundled plugins, compiles
/// and deploys every example rule signed with the data directory's development key, feeds
/// simulated sensor events, and ends by verifying the audit chain. Re-running it on the
/// same data directory resumes what a crash interrupted and skips events already journaled.
pub(crate) fn run(args: DemoArgs) -> CliResult {
    let DemoArgs {
        rules,
        data_dir,
        events,
        plugins,
        workers,
    } = args;
    let (rules, plugins) = bundle(rules, plugins)?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&rules)
        .with_context(|| format!("cannot list rules in {}", rules.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(anyhow!("no .yaml rules in {}", rules.display()).into());
    }
    let scratch;
    let data_dir = match data_dir {
        Some(dir) => dir,
        None => {
            scratch = tempfile::tempdir().context("cannot create a temporary data directory")?;
            scratch.path().to_path_buf()
        }
    };
    let key = eyeflow_runtime::node::development_key(&data_dir)?;
    let secrets = data_dir.join("secrets.json");
    if !secrets.exists() {
        // The LLM rule's vault slot; real nodes keep secrets in Vault/OpenBao or this file.
        std::fs::write(
            &secrets,
            r#"{"kv/plant-a/triage-guidelines": "Chiller and boiler trips are critical; filters are minor.",
                "kv/plant-a/bms-api-token": "demo-bms-token",
                "kv/plant-a/pager-token": "demo-pager-token"}"#,
        )
        .with_context(|| format!("cannot write {}", secrets.display()))?;
    }
    let key_id = keys::key_id(&key.verifying_key());
    println!(
        "data directory {} (development key {key_id})",
        data_dir.display()
    );

    let mut programs = Vec::new();
    let mut all_opcodes = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read rule {}", file.display()))?;
        // A rerun on the same data directory must sign the same bytes: the node refuses
        // other bytes under a version it has deployed.
        let modified = std::fs::metadata(file)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .and_then(|d| i64::try_from(d.as_secs()).ok());
        let options = CompileOptions {
            source_name: file.display().to_string(),
            compiled_by: "eyeflow demo".to_owned(),
            compiled_at: modified
                .or_else(|| i64::try_from(eyeflow_runtime::now_ms() / 1000).ok())
                .unwrap_or_default(),
        };
        let started = Instant::now();
        let program = eyeflow_compiler::compile_and_sign(&source, &options, &key)?;
        let compiled = started.elapsed();
        let bytes = eyeflow_ir::encode(&program);
        let opcodes = opcode_names(&program);
        println!(
            "{:<20} {:>3} instructions {:>6} bytes  compile {:>6.2} ms  [{}]",
            program.program_id,
            program.instructions.len(),
            bytes.len(),
            compiled.as_secs_f64() * 1e3,
            opcodes.join(" ")
        );
        all_opcodes.extend(opcodes);
        programs.push((program.program_id.clone(), bytes));
    }
    all_opcodes.sort_unstable();
    all_opcodes.dedup();
    println!(
        "{} rules compiled, signed and verified; {} of 14 opcodes used",
        files.len(),
        all_opcodes.len()
    );

    let mut config = NodeConfig::embedded(&data_dir);
    config.audit_key = Some(key.clone());
    // The example rules name plant hosts that do not exist here: keep the demo off the
    // network, so those calls fail fast as `denied` and take their fallbacks.
    config.http_allow = Some(Vec::new());
    if let Some(workers) = workers {
        config.workers = workers;
    }
    let node = Node::start(config)?;
    node.trust(&key.verifying_key())?;
    for name in BUNDLED {
        let manifest = std::fs::read(plugins.join(format!("{name}.json")))
            .with_context(|| format!("bundled plugin {name} missing in {}", plugins.display()))?;
        let component = std::fs::read(plugins.join(format!("{name}.wasm")))
            .with_context(|| format!("bundled plugin {name} missing in {}", plugins.display()))?;
        let mut package = eyeflow_runtime::plugins::Package::new(manifest, component)?;
        package.sign(&key);
        node.plugins().install(&package)?;
    }
    println!(
        "plugins: {} (outbound HTTP: none allowed in the demo)",
        BUNDLED.join(", ")
    );
    for (_, bytes) in &programs {
        node.deploy(bytes).map_err(refused)?;
    }

    let readings = node
        .plugins()
        .poll(
            &eyeflow_actors::ports::CapabilityRef::new("sensor-sim", semver::VersionReq::STAR),
            None,
            events,
            std::time::Duration::from_secs(10),
        )
        .map_err(|e| anyhow!("sensor-sim source: {e}"))?;
    let started = Instant::now();
    let (mut new, mut duplicate) = (0u32, 0u32);
    for (i, event) in readings.events.iter().enumerate() {
        let reading = event;
        let (program, _) = &programs[i % programs.len()];
        let reading: serde_json::Value =
            serde_json::from_str(&reading.payload).context("sensor-sim event payload")?;
        let payload = demo_payload(&reading);
        let event_id = format!("{program}/{}", readings.events[i].id);
        // The node refuses work it could not start in time: the demo waits, as a client
        // told `Retry-After` would.
        let accepted = loop {
            match node.submit(program, &event_id, "demo", payload.clone()) {
                Err(eyeflow_runtime::Error::Overloaded { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        match accepted {
            eyeflow_actors::ports::Accepted::New { .. } => new += 1,
            eyeflow_actors::ports::Accepted::Duplicate { .. } => duplicate += 1,
        }
        if (i + 1) % (readings.events.len() / 10).max(1) == 0 {
            println!(
                "  {:>5} events accepted, {:>5} in flight",
                i + 1,
                node.in_flight()
            );
        }
    }
    node.wait_idle();
    let took = started.elapsed();
    println!(
        "{new} events executed ({duplicate} already journaled, skipped) in {:.2} s",
        took.as_secs_f64()
    );
    print_summary(&node)?;
    node.shutdown()?;
    match eyeflow_runtime::audit::verify(node.store(), Some(&key.verifying_key()))? {
        Ok(report) => println!(
            "audit chain verified: {} entries, {} signed checkpoints, head {}",
            report.entries,
            report.checkpoints,
            hex::encode(report.head_hash)
        ),
        Err(broken) => return Err(broken.into()),
    }
    Ok(())
}

/// The bundled plugins the example rules use.
const BUNDLED: [&str; 4] = ["sensor-sim", "valve-sim", "http-json", "webhook-notify"];

/// The rules and plugins folders: `--rules` and `--plugins` when given, else those of the
/// eyeflow folder the binary is in (see [`eyeflow_folder`]); its built plugins are in
/// `plugins/` (an installation) or `target/plugins/` (a checkout, built by
/// `scripts/build-plugins.sh` when missing).
fn bundle(rules: Option<PathBuf>, plugins: Option<PathBuf>) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let (Some(rules), Some(plugins)) = (&rules, &plugins) {
        return Ok((rules.clone(), plugins.clone()));
    }
    let exe = std::env::current_exe().context("cannot find the running binary")?;
    let Some(root) = eyeflow_folder(&exe) else {
        return Err(anyhow!(
            "cannot find the example rules and bundled plugins: no folder above {} holds \
             examples/rules and plugins/; pass --rules DIR and --plugins DIR",
            exe.display()
        ));
    };
    let rules = rules.unwrap_or_else(|| root.join("examples/rules"));
    if let Some(plugins) = plugins {
        return Ok((rules, plugins));
    }
    let installed = root.join("plugins");
    if installed.join("valve-sim.wasm").exists() {
        return Ok((rules, installed));
    }
    let built = root.join("target/plugins");
    let script = root.join("scripts/build-plugins.sh");
    if !built.join("valve-sim.wasm").exists() && script.exists() {
        println!("building the bundled plugins ({})...", script.display());
        let status = std::process::Command::new("bash")
            .arg(&script)
            .status()
            .with_context(|| format!("cannot run {}", script.display()))?;
        if !status.success() {
            return Err(anyhow!("{} failed ({status})", script.display()));
        }
    }
    Ok((rules, built))
}

/// The nearest folder above `exe` that holds `examples/rules` and `plugins/`: the checkout
/// a built binary is in (`target/<profile>/eyeflow`), or an installation laid out the same.
fn eyeflow_folder(exe: &Path) -> Option<PathBuf> {
    exe.ancestors()
        .skip(1)
        .find(|dir| dir.join("examples/rules").is_dir() && dir.join("plugins").is_dir())
        .map(Path::to_path_buf)
}

/// A sensor reading dressed as the events the example rules expect.
fn demo_payload(reading: &serde_json::Value) -> serde_json::Value {
    let value = reading["value"].as_f64().unwrap_or_default();
    let sensor = reading["sensor"].as_str().unwrap_or("boiler-1");
    let critical = match reading["kind"].as_str() {
        Some("pressure") => value > 8.0,
        Some("temperature") => value > 85.0,
        _ => value > 90.0,
    };
    serde_json::json!({
        "value": value,
        "sensor": sensor,
        "kind": reading["kind"],
        "unit": reading["unit"],
        "ts": reading["ts"],
        "asset": sensor,
        "text": format!("{} {} at {value}", sensor, reading["kind"].as_str().unwrap_or("reading")),
        "severity": if critical { "critical" } else { "warning" },
        "alarm": {"code": format!("{}-{}", sensor, reading["kind"].as_str().unwrap_or("reading")), "value": value},
    })
}

fn print_summary(node: &Node) -> anyhow::Result<()> {
    let mut fallbacks: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> =
        std::collections::BTreeMap::new();
    let mut from = 0;
    loop {
        let entries = node.audit().entries(from, 1000)?;
        let Some(last) = entries.last() else { break };
        from = last.index + 1;
        for chained in &entries {
            if let Some(fallback) = &chained.entry.fallback {
                *fallbacks
                    .entry(chained.entry.program_id.clone())
                    .or_default()
                    .entry(fallback.clone())
                    .or_insert(0) += 1;
            }
        }
    }
    println!(
        "{:<20} {:>6} {:>9} {:>9}  outcomes / fallbacks",
        "program", "runs", "p50 ms", "p99 ms"
    );
    for (program, stats) in node.stats() {
        let mut lat = stats.latencies_us.clone();
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                .map_or(0.0, |us| *us as f64 / 1e3)
        };
        let outcomes: Vec<String> = stats
            .outcomes
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let taken: Vec<String> = fallbacks
            .get(&program)
            .map(|f| f.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default();
        println!(
            "{:<20} {:>6} {:>9.2} {:>9.2}  {} / {}",
            program,
            stats.outcomes.values().sum::<u64>(),
            pct(0.5),
            pct(0.99),
            outcomes.join(" "),
            if taken.is_empty() {
                "none".to_owned()
            } else {
                taken.join(" ")
            }
        );
        if let Some(failure) = &stats.first_failure {
            println!("{:<20} first failure: {failure}{}", "", expected(failure));
        }
    }
    println!(
        "(expected in the demo: LLM rules take their fallback model, as no LLM endpoint is configured; \
         calls to plant hosts fail as `denied` into their fallbacks, as outbound HTTP is off)"
    );
    Ok(())
}

/// Why a failure is what the demo's setup makes happen, if it is.
fn expected(failure: &str) -> &'static str {
    if failure.contains("denied") {
        " (expected: outbound HTTP is off in the demo)"
    } else if failure.contains("model-unavailable") {
        " (expected: no LLM endpoint in the demo)"
    } else {
        ""
    }
}

fn opcode_names(program: &LlmIrProgram) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = program
        .instructions
        .iter()
        .filter_map(|i| IrOpcode::try_from(i.opcode).ok())
        .map(|op| op.as_str_name())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}
