//! `eyeflow plugin …`: the plugin author's loop (new, build, sign, inspect) and the
//! operator's (install, list, revoke, grant, transfer) on a data directory, or on a running
//! node through its API (`--node`, or the node running on the data directory).

mod sdk;

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::{Subcommand, ValueEnum};
use eyeflow_ir::keys;
use eyeflow_runtime::audit::{AuditConfig, FjallAudit};
use eyeflow_runtime::plugins::catalog::Entry;
use eyeflow_runtime::plugins::{GrantChange, HostConfig, Installed, Manifest, Package, PluginHost};
use eyeflow_runtime::secrets::LocalSecrets;
use eyeflow_runtime::store::{Durability, EmbeddedStore};
use serde::Deserialize;

use super::options::{DataDir, OnNode, Remote, Target, path_segment};

/// Kind of plugin to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum NewKind {
    /// Reads resources (and optionally produces events).
    Connector,
    /// Performs actions.
    Capability,
}

impl NewKind {
    fn name(self) -> &'static str {
        match self {
            Self::Connector => "connector",
            Self::Capability => "capability",
        }
    }
}

/// The plugin host of a data directory's store.
fn host(store: EmbeddedStore) -> anyhow::Result<PluginHost> {
    let secrets = LocalSecrets::load(&store.data_dir().join("secrets.json"))?;
    Ok(PluginHost::open(
        store,
        Arc::new(secrets),
        HostConfig::default(),
    )?)
}

/// The version `plugin new` starts a plugin at (its crate, its manifest and the capability
/// it provides): what a rule's `requires: NAME: ^1.0` (the compiler's own suggestion)
/// selects, so a new plugin and a new rule agree without an edit.
const FIRST_VERSION: &str = "1.0.0";

/// `eyeflow plugin …`.
#[derive(Debug, Subcommand)]
pub(crate) enum PluginCommand {
    /// Create a plugin crate from the template (builds standalone for wasm32-wasip2).
    New {
        /// Plugin id and crate name (a-z, 0-9, '-').
        name: String,
        /// Connector or capability.
        #[arg(long)]
        kind: NewKind,
        /// Parent directory of the new crate.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Path of eyeflow-plugin-sdk (default: the copy embedded in this binary, written
        /// under `$EYEFLOW_HOME/plugin-sdk/<version>`).
        #[arg(long, env = "EYEFLOW_SDK_PATH")]
        sdk: Option<PathBuf>,
    },
    /// Build a plugin crate for wasm32-wasip2 and write its (unsigned) package; prints the
    /// package path.
    Build {
        /// The plugin crate (holding Cargo.toml and eyeflow-plugin.json).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Sign the package with this key right away.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Sign a package (in place, or to --output).
    Sign {
        /// The package file.
        file: PathBuf,
        /// The publisher's secret key (NAME.key).
        #[arg(long)]
        key: PathBuf,
        /// Write the signed package here instead of in place.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Show a package's manifest, sizes, digest and signature.
    Inspect {
        /// The package file.
        file: PathBuf,
    },
    /// Install a signed package into a data directory, or on a running node (live).
    Install {
        /// The package file.
        file: PathBuf,
        /// Grant HTTP to HOST or HOST:PORT (repeatable).
        #[arg(long = "grant-http")]
        grant_http: Vec<String>,
        /// Grant the secret NAME (repeatable).
        #[arg(long = "grant-secret")]
        grant_secret: Vec<String>,
        #[command(flatten)]
        on: OnNode,
    },
    /// List installed and revoked plugin versions.
    List {
        #[command(flatten)]
        on: OnNode,
    },
    /// Revoke ID@VERSION: never chosen or installed again.
    Revoke {
        /// `id@version`.
        plugin: String,
        #[command(flatten)]
        on: OnNode,
    },
    /// Change what plugin ID may reach.
    Grant {
        /// Plugin id.
        id: String,
        /// Allow HTTP to HOST or HOST:PORT (repeatable).
        #[arg(long)]
        http: Vec<String>,
        /// Allow secret NAME (repeatable).
        #[arg(long)]
        secret: Vec<String>,
        /// Withdraw HTTP to HOST or HOST:PORT (repeatable).
        #[arg(long)]
        revoke_http: Vec<String>,
        /// Withdraw secret NAME (repeatable).
        #[arg(long)]
        revoke_secret: Vec<String>,
        #[command(flatten)]
        data_dir: DataDir,
    },
    /// Move plugin ID to another publisher key: packages signed by KEYID install under ID
    /// from now on, the previous key's are refused; ID's grant is cleared (grant again);
    /// recorded in the audit chain.
    Transfer {
        /// Plugin id.
        id: String,
        /// Id of the new publisher's key (trusted: `eyeflow keys trust`).
        #[arg(long = "to-key")]
        to_key: String,
        #[command(flatten)]
        on: OnNode,
    },
}

/// Runs a plugin command.
pub(crate) fn run(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New {
            name,
            kind,
            dir,
            sdk,
        } => new(&name, kind, &dir, sdk),
        PluginCommand::Build { dir, key } => build(&dir, key.as_deref()),
        PluginCommand::Sign { file, key, output } => sign(&file, &key, output.as_deref()),
        PluginCommand::Inspect { file } => inspect(&file),
        PluginCommand::Install {
            file,
            grant_http,
            grant_secret,
            on,
        } => install(&file, &on, grant_http, grant_secret),
        PluginCommand::List { on } => list(&on),
        PluginCommand::Revoke { plugin, on } => revoke(&plugin, &on),
        PluginCommand::Grant {
            id,
            http,
            secret,
            revoke_http,
            revoke_secret,
            data_dir,
        } => {
            let changes: Vec<GrantChange> = http
                .into_iter()
                .map(GrantChange::AllowHttp)
                .chain(secret.into_iter().map(GrantChange::AllowSecret))
                .chain(revoke_http.into_iter().map(GrantChange::DenyHttp))
                .chain(revoke_secret.into_iter().map(GrantChange::DenySecret))
                .collect();
            let grant = host(data_dir.store("plugin grant")?)?.change_grant(&id, &changes)?;
            println!("{id}: {}", serde_json::to_string(&grant)?);
            Ok(())
        }
        PluginCommand::Transfer { id, to_key, on } => transfer(&id, &to_key, &on),
    }
}

/// A request to a running node; its failure an error (plugin commands exit 1 on any
/// failure).
fn call(
    node: &Remote,
    method: reqwest::Method,
    path: &str,
    body: Option<(&'static str, Vec<u8>)>,
) -> anyhow::Result<serde_json::Value> {
    node.call(method, path, body, &[]).map_err(|f| f.error)
}

/// Prints a running node's JSON answer.
fn print_answer(answer: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(answer)?);
    Ok(())
}

fn transfer(id: &str, to_key: &str, on: &OnNode) -> anyhow::Result<()> {
    let store = match on.target()? {
        Target::Store(store) => store,
        Target::Node(node) => {
            let body = serde_json::to_vec(&serde_json::json!({ "key_id": to_key }))?;
            let path = format!("/api/plugins/{}/transfer", path_segment(id));
            let answer = call(
                &node,
                reqwest::Method::POST,
                &path,
                Some(("application/json", body)),
            )?;
            return print_answer(&answer);
        }
    };
    let host = host(store)?;
    let audit = FjallAudit::open(
        host.catalog().store().clone(),
        AuditConfig {
            durability: Durability::Sync,
            ..AuditConfig::default()
        },
    )?;
    let transfer = host.transfer(id, to_key, &audit)?;
    println!(
        "transferred {} from key {} to key {}; its grant is cleared (grant again with `eyeflow plugin grant {}`)",
        transfer.id, transfer.from, transfer.to, transfer.id
    );
    Ok(())
}

fn new(name: &str, kind: NewKind, parent: &Path, sdk: Option<PathBuf>) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        bail!("plugin name `{name}`: expected lowercase letters, digits and '-'");
    }
    let sdk = match sdk {
        Some(sdk) => sdk,
        None => {
            let home = sdk::sdk_home()?;
            sdk::write_sdk(&home)?;
            home
        }
    };
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("plugin SDK not found at {}; pass --sdk PATH", sdk.display()))?;
    let dir = parent.join(name);
    if dir.exists() {
        bail!("{} already exists", dir.display());
    }
    let other = match kind {
        NewKind::Connector => NewKind::Capability,
        NewKind::Capability => NewKind::Connector,
    };
    for (path, text) in sdk::TEMPLATE {
        if path.contains(&format!(".{}.", other.name())) {
            continue;
        }
        let target = dir.join(
            path.replace(&format!(".{}", kind.name()), "")
                .trim_end_matches(".tmpl"),
        );
        let text = text
            .replace("{{name}}", name)
            .replace("{{version}}", FIRST_VERSION)
            .replace("{{sdk_path}}", &sdk.display().to_string());
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&target, text)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    println!("created {} plugin {}", kind.name(), dir.display());
    println!("next: eyeflow plugin build {}", dir.display());
    Ok(())
}

fn build(dir: &Path, key: Option<&Path>) -> anyhow::Result<()> {
    // Read the key first: a wrong file should fail before a release build, not after.
    let key = key.map(keys::read_signing_key).transpose()?;
    let manifest_path = dir.join("eyeflow-plugin.json");
    let manifest = std::fs::read(&manifest_path)
        .with_context(|| format!("cannot read {}", manifest_path.display()))?;
    let crate_name = crate_name(&dir.join("Cargo.toml"))?;
    let target_dir = dir.join("target");
    let out = package_path(&target_dir, &Manifest::from_json(&manifest)?);
    if key.is_none() && Package::is_signed_file(&out) {
        bail!(
            "{} is a signed package and a build without --key would replace it with an unsigned one; pass --key KEY to sign this build, or move the signed package away first",
            out.display()
        );
    }
    let status = Process::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!(
            "cargo build failed ({status}); is the target installed? `rustup target add wasm32-wasip2`"
        );
    }
    let wasm = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    let component =
        std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let mut package = Package::new(manifest, component)?;
    for unused in package.check_imports()? {
        eprintln!(
            "warning: the manifest declares `{unused}` in `imports` but the component does not import it; remove it so that operators are not asked to grant it"
        );
    }
    if let Some(key) = &key {
        package.sign(key);
    }
    let out_dir = target_dir.join("eyeflow");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    package.write(&out)?;
    println!("{}", out.display());
    Ok(())
}

/// Where `plugin build` writes the package of `manifest`.
fn package_path(target_dir: &Path, manifest: &Manifest) -> PathBuf {
    target_dir
        .join("eyeflow")
        .join(format!("{}-{}.efp", manifest.id, manifest.version))
}

fn crate_name(cargo_toml: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(cargo_toml)
        .with_context(|| format!("cannot read {}", cargo_toml.display()))?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = line.strip_prefix("name") {
            let value = value
                .trim_start()
                .trim_start_matches('=')
                .trim()
                .trim_matches('"');
            return Ok(value.to_owned());
        }
    }
    bail!("{}: no [package] name", cargo_toml.display())
}

fn sign(file: &Path, key: &Path, output: Option<&Path>) -> anyhow::Result<()> {
    let mut package = Package::read(file)?;
    let key = keys::read_signing_key(key)?;
    package.sign(&key);
    let out = output.unwrap_or(file);
    package.write(out)?;
    println!(
        "signed {} with key {} -> {}",
        package.label(),
        keys::key_id(&key.verifying_key()),
        out.display()
    );
    Ok(())
}

fn inspect(file: &Path) -> anyhow::Result<()> {
    let package = Package::read(file)?;
    let manifest = &package.manifest;
    println!("plugin      {}", package.label());
    println!(
        "kind        {:?}{}",
        manifest.kind,
        if manifest.source {
            " (event source)"
        } else {
            ""
        }
    );
    println!("wit         eyeflow:plugin@{}", manifest.wit);
    println!("description {}", manifest.description);
    for provided in &manifest.provides {
        println!("provides    {}@{}", provided.capability, provided.version);
    }
    let imports: Vec<&str> = manifest.imports.iter().map(|i| i.name()).collect();
    println!(
        "imports     {}",
        if imports.is_empty() {
            "(none)".to_owned()
        } else {
            imports.join(", ")
        }
    );
    let operations: Vec<&str> = manifest.operations.keys().map(String::as_str).collect();
    println!("operations  {}", operations.join(", "));
    println!(
        "component   {} bytes, sha256 {}",
        package.component().len(),
        hex::encode(package.component_digest())
    );
    println!("digest      {}", hex::encode(package.digest()));
    match package.signature() {
        Some(sig) => println!("signature   key {}", sig.key_id),
        None => println!("signature   none (unsigned: no node will install it)"),
    }
    Ok(())
}

fn install(
    file: &Path,
    on: &OnNode,
    grant_http: Vec<String>,
    grant_secret: Vec<String>,
) -> anyhow::Result<()> {
    let store = match on.target()? {
        Target::Store(store) => store,
        Target::Node(node) => {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let query = format!(
                "/api/plugins?grant_http={}&grant_secret={}",
                path_segment(&grant_http.join(",")),
                path_segment(&grant_secret.join(","))
            );
            let answer = call(
                &node,
                reqwest::Method::POST,
                &query,
                Some(("application/octet-stream", bytes)),
            )?;
            return print_answer(&answer);
        }
    };
    let package = Package::read(file)?;
    let host = host(store)?;
    match host.install(&package)? {
        Installed::New { label, key_id } => println!("installed {label} (signed by {key_id})"),
        Installed::Unchanged { label } => println!("{label} is already installed"),
    }
    let changes: Vec<GrantChange> = grant_http
        .into_iter()
        .map(GrantChange::AllowHttp)
        .chain(grant_secret.into_iter().map(GrantChange::AllowSecret))
        .collect();
    if !changes.is_empty() {
        let grant = host.change_grant(&package.manifest.id, &changes)?;
        println!("grant {}", serde_json::to_string(&grant)?);
    }
    Ok(())
}

/// Installed and revoked versions, one line each: the catalog entry and whether it is
/// ready (or why not).
fn list(on: &OnNode) -> anyhow::Result<()> {
    let listed: Vec<(Entry, String)> = match on.target()? {
        Target::Store(store) => host(store)?
            .list()?
            .into_iter()
            .map(|info| {
                let status = info.runnable.err().unwrap_or_else(|| "ready".to_owned());
                (info.entry, status)
            })
            .collect(),
        Target::Node(node) => {
            let answer = call(&node, reqwest::Method::GET, "/api/plugins", None)?;
            answer["plugins"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|plugin| {
                    let entry = Entry::deserialize(&plugin["entry"])
                        .context("the node listed a plugin entry this binary cannot read")?;
                    let status = plugin["problem"].as_str().unwrap_or("ready").to_owned();
                    Ok((entry, status))
                })
                .collect::<anyhow::Result<_>>()?
        }
    };
    if listed.is_empty() {
        println!(
            "no plugins installed in {}",
            on.data_dir().path()?.display()
        );
    }
    for (entry, status) in listed {
        let manifest = &entry.manifest;
        let provides: Vec<String> = manifest
            .provides
            .iter()
            .map(|p| format!("{}@{}", p.capability, p.version))
            .collect();
        println!(
            "{:<32} {:<10} provides {:<28} key {}  {}",
            manifest.label(),
            format!("{:?}", manifest.kind).to_lowercase(),
            provides.join(","),
            entry.key_id,
            status
        );
    }
    Ok(())
}

fn revoke(plugin: &str, on: &OnNode) -> anyhow::Result<()> {
    let (id, version) = plugin
        .split_once('@')
        .ok_or_else(|| anyhow!("`{plugin}`: expected ID@VERSION"))?;
    let version = semver::Version::parse(version)
        .with_context(|| format!("`{version}` is not a semver version"))?;
    match on.target()? {
        Target::Store(store) => host(store)?.revoke(id, &version)?,
        Target::Node(node) => {
            call(
                &node,
                reqwest::Method::POST,
                &format!("/api/plugins/{}/{version}/revoke", path_segment(id)),
                None,
            )?;
        }
    }
    println!("revoked {id}@{version}");
    Ok(())
}
