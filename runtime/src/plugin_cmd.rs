//! `eyeflow plugin …` and `eyeflow keys trust|revoke`: the plugin author's loop (new,
//! build, sign, inspect) and the operator's (install, list, revoke, grant) on a data
//! directory.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::{Subcommand, ValueEnum};
use eyeflow_ir::keys;
use eyeflow_runtime::audit::{AuditConfig, FjallAudit};
use eyeflow_runtime::plugins::{GrantChange, HostConfig, Installed, Manifest, Package, PluginHost};
use eyeflow_runtime::secrets::LocalSecrets;
use eyeflow_runtime::store::{Durability, EmbeddedStore};

/// The template `plugin new` copies, embedded so the command works from any directory.
const TEMPLATE: [(&str, &str); 6] = [
    (
        "Cargo.toml.tmpl",
        include_str!("../../examples/plugin-template/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs.capability.tmpl",
        include_str!("../../examples/plugin-template/src/lib.rs.capability.tmpl"),
    ),
    (
        "src/lib.rs.connector.tmpl",
        include_str!("../../examples/plugin-template/src/lib.rs.connector.tmpl"),
    ),
    (
        "eyeflow-plugin.json.capability.tmpl",
        include_str!("../../examples/plugin-template/eyeflow-plugin.json.capability.tmpl"),
    ),
    (
        "eyeflow-plugin.json.connector.tmpl",
        include_str!("../../examples/plugin-template/eyeflow-plugin.json.connector.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../examples/plugin-template/README.md"),
    ),
];

/// The plugin SDK (the `eyeflow-plugin-sdk` crate), embedded so that an installed binary
/// needs no checkout: `plugin new` writes it under `$EYEFLOW_HOME/plugin-sdk/<version>`
/// (default home: `$XDG_DATA_HOME/eyeflow`, else `~/.local/share/eyeflow`).
const SDK: [(&str, &str); 15] = [
    ("Cargo.toml", include_str!("../../plugin-sdk/Cargo.toml")),
    ("README.md", include_str!("../../plugin-sdk/README.md")),
    (
        "src/bindings.rs",
        include_str!("../../plugin-sdk/src/bindings.rs"),
    ),
    (
        "src/clock.rs",
        include_str!("../../plugin-sdk/src/clock.rs"),
    ),
    (
        "src/error.rs",
        include_str!("../../plugin-sdk/src/error.rs"),
    ),
    (
        "src/export.rs",
        include_str!("../../plugin-sdk/src/export.rs"),
    ),
    ("src/http.rs", include_str!("../../plugin-sdk/src/http.rs")),
    ("src/kv.rs", include_str!("../../plugin-sdk/src/kv.rs")),
    ("src/lib.rs", include_str!("../../plugin-sdk/src/lib.rs")),
    ("src/log.rs", include_str!("../../plugin-sdk/src/log.rs")),
    ("src/once.rs", include_str!("../../plugin-sdk/src/once.rs")),
    (
        "src/secrets.rs",
        include_str!("../../plugin-sdk/src/secrets.rs"),
    ),
    (
        "wit/plugin.wit",
        include_str!("../../plugin-sdk/wit/plugin.wit"),
    ),
    (
        "wit/archive/1.0.0/plugin.wit",
        include_str!("../../plugin-sdk/wit/archive/1.0.0/plugin.wit"),
    ),
    (
        "wit/archive/1.1.0/plugin.wit",
        include_str!("../../plugin-sdk/wit/archive/1.1.0/plugin.wit"),
    ),
];

/// Where `plugin new` writes the embedded SDK, unless `--sdk` names another.
fn sdk_home() -> anyhow::Result<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = var("EYEFLOW_HOME")
        .or_else(|| var("XDG_DATA_HOME").map(|d| d.join("eyeflow")))
        .or_else(|| var("HOME").map(|h| h.join(".local/share/eyeflow")))
        .ok_or_else(|| {
            anyhow!("no EYEFLOW_HOME nor HOME to put the plugin SDK in; pass --sdk PATH")
        })?;
    Ok(home.join("plugin-sdk").join(env!("CARGO_PKG_VERSION")))
}

/// Writes the embedded SDK at `dir` (again, so that it always matches this binary).
fn write_sdk(dir: &Path) -> anyhow::Result<()> {
    for (path, text) in SDK {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        if std::fs::read_to_string(&target).is_ok_and(|old| old == text) {
            continue;
        }
        std::fs::write(&target, text)
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    Ok(())
}

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

/// The data directory option shared by the operator commands.
#[derive(Debug, clap::Args)]
pub(crate) struct DataDir {
    /// Node data directory (default: $EYEFLOW_DATA_DIR, else $XDG_DATA_HOME/eyeflow, else
    /// ~/.local/share/eyeflow).
    #[arg(long = "data-dir", env = "EYEFLOW_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDir {
    pub(crate) fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(xdg).join("eyeflow"));
        }
        let home = std::env::var_os("HOME")
            .ok_or_else(|| anyhow!("no --data-dir, $EYEFLOW_DATA_DIR or $HOME"))?;
        Ok(PathBuf::from(home).join(".local/share/eyeflow"))
    }

    fn store(&self) -> anyhow::Result<EmbeddedStore> {
        let path = self.path()?;
        EmbeddedStore::open(&path)
            .with_context(|| format!("cannot open data directory {}", path.display()))
    }

    fn host(&self) -> anyhow::Result<PluginHost> {
        let store = self.store()?;
        let secrets = LocalSecrets::load(&store.data_dir().join("secrets.json"))?;
        Ok(PluginHost::open(
            store,
            Arc::new(secrets),
            HostConfig::default(),
        )?)
    }
}

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
    /// Install a signed package into a data directory (live on a running host).
    Install {
        /// The package file.
        file: PathBuf,
        #[command(flatten)]
        data_dir: DataDir,
        /// Grant HTTP to HOST or HOST:PORT (repeatable).
        #[arg(long = "grant-http")]
        grant_http: Vec<String>,
        /// Grant the secret NAME (repeatable).
        #[arg(long = "grant-secret")]
        grant_secret: Vec<String>,
        /// Install on a running node through its API (URL) instead of a data directory.
        #[arg(long = "node", env = "EYEFLOW_NODE")]
        node: Option<String>,
        /// Bearer token for `--node` (admin role).
        #[arg(long, env = "EYEFLOW_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// List installed and revoked plugin versions.
    List {
        #[command(flatten)]
        data_dir: DataDir,
    },
    /// Revoke ID@VERSION: never chosen or installed again.
    Revoke {
        /// `id@version`.
        plugin: String,
        #[command(flatten)]
        data_dir: DataDir,
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
        data_dir: DataDir,
        /// Transfer on a running node through its API (URL) instead of a data directory.
        #[arg(long = "node", env = "EYEFLOW_NODE")]
        node: Option<String>,
        /// Bearer token for `--node` (admin role).
        #[arg(long, env = "EYEFLOW_TOKEN", hide_env_values = true)]
        token: Option<String>,
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
            node: Some(url),
            token,
            ..
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let query = format!(
                "/api/plugins?grant_http={}&grant_secret={}",
                crate::cli::path_segment(&grant_http.join(",")),
                crate::cli::path_segment(&grant_secret.join(","))
            );
            crate::node_cmd::Remote { url, token }
                .send(
                    reqwest::Method::POST,
                    &query,
                    Some(("application/octet-stream", bytes)),
                    &[],
                )
                .map(drop)
                .map_err(|f| f.error)
        }
        PluginCommand::Install {
            file,
            data_dir,
            grant_http,
            grant_secret,
            node: None,
            ..
        } => install(&file, &data_dir, grant_http, grant_secret),
        PluginCommand::List { data_dir } => list(&data_dir),
        PluginCommand::Revoke { plugin, data_dir } => revoke(&plugin, &data_dir),
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
            let grant = data_dir.host()?.change_grant(&id, &changes)?;
            println!("{id}: {}", serde_json::to_string(&grant)?);
            Ok(())
        }
        PluginCommand::Transfer {
            id,
            to_key,
            node: Some(url),
            token,
            ..
        } => {
            let body = serde_json::to_vec(&serde_json::json!({ "key_id": to_key }))?;
            let path = format!("/api/plugins/{}/transfer", crate::cli::path_segment(&id));
            crate::node_cmd::Remote { url, token }
                .send(
                    reqwest::Method::POST,
                    &path,
                    Some(("application/json", body)),
                    &[],
                )
                .map(drop)
                .map_err(|f| f.error)
        }
        PluginCommand::Transfer {
            id,
            to_key,
            data_dir,
            node: None,
            ..
        } => transfer(&id, &to_key, &data_dir),
    }
}

fn transfer(id: &str, to_key: &str, data_dir: &DataDir) -> anyhow::Result<()> {
    let host = data_dir.host()?;
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

/// `eyeflow keys trust FILE.pub`: only a public key file; a secret one is refused, never
/// read for its public half.
pub(crate) fn trust(file: &Path, data_dir: &DataDir) -> anyhow::Result<()> {
    let key = keys::read_verifying_key(file)?;
    let id = data_dir.store()?.trust_key(&key)?;
    println!("trusted key {id} ({})", file.display());
    Ok(())
}

/// `eyeflow keys revoke ID`.
pub(crate) fn revoke_key(id: &str, data_dir: &DataDir) -> anyhow::Result<()> {
    if !data_dir.store()?.revoke_key(id)? {
        bail!("key {id} is not in the keyring");
    }
    println!("revoked key {id}");
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
            let home = sdk_home()?;
            write_sdk(&home)?;
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
    for (path, text) in TEMPLATE {
        if path.contains(&format!(".{}.", other.name())) {
            continue;
        }
        let target = dir.join(
            path.replace(&format!(".{}", kind.name()), "")
                .trim_end_matches(".tmpl"),
        );
        let text = text
            .replace("{{name}}", name)
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
    data_dir: &DataDir,
    grant_http: Vec<String>,
    grant_secret: Vec<String>,
) -> anyhow::Result<()> {
    let package = Package::read(file)?;
    let host = data_dir.host()?;
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

fn list(data_dir: &DataDir) -> anyhow::Result<()> {
    let host = data_dir.host()?;
    let plugins = host.list()?;
    if plugins.is_empty() {
        println!("no plugins installed in {}", data_dir.path()?.display());
    }
    for info in plugins {
        let manifest = &info.entry.manifest;
        let provides: Vec<String> = manifest
            .provides
            .iter()
            .map(|p| format!("{}@{}", p.capability, p.version))
            .collect();
        let status = match &info.runnable {
            Ok(()) => "ready".to_owned(),
            Err(why) => why.clone(),
        };
        println!(
            "{:<32} {:<10} provides {:<28} key {}  {}",
            manifest.label(),
            format!("{:?}", manifest.kind).to_lowercase(),
            provides.join(","),
            info.entry.key_id,
            status
        );
    }
    Ok(())
}

fn revoke(plugin: &str, data_dir: &DataDir) -> anyhow::Result<()> {
    let (id, version) = plugin
        .split_once('@')
        .ok_or_else(|| anyhow!("`{plugin}`: expected ID@VERSION"))?;
    let version = semver::Version::parse(version)
        .with_context(|| format!("`{version}` is not a semver version"))?;
    data_dir.host()?.revoke(id, &version)?;
    println!("revoked {id}@{version}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file of `dir` below `root`, as a relative path with `/`.
    fn files(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                files(root, &path, out);
            } else if let Ok(relative) = path.strip_prefix(root) {
                out.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }

    #[test]
    fn the_embedded_sdk_is_the_whole_sdk_at_this_version() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
        let mut on_disk = vec!["Cargo.toml".to_owned(), "README.md".to_owned()];
        files(&root, &root.join("src"), &mut on_disk);
        files(&root, &root.join("wit"), &mut on_disk);
        on_disk.sort();
        let mut embedded: Vec<String> = SDK.iter().map(|(path, _)| (*path).to_owned()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "the SDK list in plugin_cmd.rs");
        let manifest = SDK[0].1;
        assert!(
            manifest.contains(&format!("\nversion = \"{}\"\n", env!("CARGO_PKG_VERSION"))),
            "plugin-sdk/Cargo.toml's version is the workspace's"
        );
    }
}
