//! What `eyeflow plugin new` writes, embedded in the binary so that it needs no checkout:
//! the plugin crate template and the plugin SDK (`eyeflow-plugin-sdk`).

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};

/// The template `plugin new` copies, embedded so the command works from any directory.
pub(super) const TEMPLATE: [(&str, &str); 6] = [
    (
        "Cargo.toml.tmpl",
        include_str!("../../../../examples/plugin-template/Cargo.toml.tmpl"),
    ),
    (
        "src/lib.rs.capability.tmpl",
        include_str!("../../../../examples/plugin-template/src/lib.rs.capability.tmpl"),
    ),
    (
        "src/lib.rs.connector.tmpl",
        include_str!("../../../../examples/plugin-template/src/lib.rs.connector.tmpl"),
    ),
    (
        "eyeflow-plugin.json.capability.tmpl",
        include_str!("../../../../examples/plugin-template/eyeflow-plugin.json.capability.tmpl"),
    ),
    (
        "eyeflow-plugin.json.connector.tmpl",
        include_str!("../../../../examples/plugin-template/eyeflow-plugin.json.connector.tmpl"),
    ),
    (
        "README.md",
        include_str!("../../../../examples/plugin-template/README.md"),
    ),
];

/// The plugin SDK (the `eyeflow-plugin-sdk` crate), embedded so that an installed binary
/// needs no checkout: `plugin new` writes it under `$EYEFLOW_HOME/plugin-sdk/<version>`
/// (default home: `$XDG_DATA_HOME/eyeflow`, else `~/.local/share/eyeflow`).
const SDK: [(&str, &str); 15] = [
    (
        "Cargo.toml",
        include_str!("../../../../plugin-sdk/Cargo.toml"),
    ),
    (
        "README.md",
        include_str!("../../../../plugin-sdk/README.md"),
    ),
    (
        "src/bindings.rs",
        include_str!("../../../../plugin-sdk/src/bindings.rs"),
    ),
    (
        "src/clock.rs",
        include_str!("../../../../plugin-sdk/src/clock.rs"),
    ),
    (
        "src/error.rs",
        include_str!("../../../../plugin-sdk/src/error.rs"),
    ),
    (
        "src/export.rs",
        include_str!("../../../../plugin-sdk/src/export.rs"),
    ),
    (
        "src/http.rs",
        include_str!("../../../../plugin-sdk/src/http.rs"),
    ),
    (
        "src/kv.rs",
        include_str!("../../../../plugin-sdk/src/kv.rs"),
    ),
    (
        "src/lib.rs",
        include_str!("../../../../plugin-sdk/src/lib.rs"),
    ),
    (
        "src/log.rs",
        include_str!("../../../../plugin-sdk/src/log.rs"),
    ),
    (
        "src/once.rs",
        include_str!("../../../../plugin-sdk/src/once.rs"),
    ),
    (
        "src/secrets.rs",
        include_str!("../../../../plugin-sdk/src/secrets.rs"),
    ),
    (
        "wit/plugin.wit",
        include_str!("../../../../plugin-sdk/wit/plugin.wit"),
    ),
    (
        "wit/archive/1.0.0/plugin.wit",
        include_str!("../../../../plugin-sdk/wit/archive/1.0.0/plugin.wit"),
    ),
    (
        "wit/archive/1.1.0/plugin.wit",
        include_str!("../../../../plugin-sdk/wit/archive/1.1.0/plugin.wit"),
    ),
];

/// Where `plugin new` writes the embedded SDK, unless `--sdk` names another.
pub(super) fn sdk_home() -> anyhow::Result<PathBuf> {
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
pub(super) fn write_sdk(dir: &Path) -> anyhow::Result<()> {
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
        assert_eq!(embedded, on_disk, "the SDK list in cli/plugin/sdk.rs");
        let manifest = SDK[0].1;
        assert!(
            manifest.contains(&format!("\nversion = \"{}\"\n", env!("CARGO_PKG_VERSION"))),
            "plugin-sdk/Cargo.toml's version is the workspace's"
        );
    }
}
