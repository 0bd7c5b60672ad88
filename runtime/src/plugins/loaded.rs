//! One runnable plugin version: its compiled component checked against its manifest (the
//! imports it may use, the entry points its kind must export), linked against the grant of
//! its id, with its operations' JSON schemas compiled.

use std::collections::BTreeMap;
use std::sync::Arc;

use semver::Version;
use serde_json::Value;
use wasmtime::Engine;
use wasmtime::component::{
    Component, ComponentExportIndex, InstancePre, Linker, types::ComponentItem,
};

use super::grants::Grant;
use super::imports::{CallState, link};
use super::manifest::{HOST_WIT_VERSION, Kind, Manifest};
use crate::{Error, Result};

/// Where a plugin's entry points are in its component.
#[derive(Debug, Clone)]
pub(super) enum Entrypoints {
    Capability {
        describe: ComponentExportIndex,
        invoke: ComponentExportIndex,
    },
    Connector {
        describe: ComponentExportIndex,
        read: ComponentExportIndex,
        poll: Option<ComponentExportIndex>,
    },
}

/// One runnable plugin version: compiled, linked against its grant, schemas compiled.
pub(super) struct Loaded {
    pub(super) manifest: Manifest,
    pub(super) label: Arc<str>,
    pub(super) id: Arc<str>,
    pub(super) key_id: String,
    pub(super) component: Component,
    pub(super) entrypoints: Entrypoints,
    pub(super) grant: Arc<Grant>,
    /// Linked instance template, or why the plugin cannot run under its current grant.
    pub(super) pre: std::result::Result<InstancePre<CallState>, String>,
    pub(super) schemas: BTreeMap<String, (jsonschema::Validator, jsonschema::Validator)>,
    pub(super) from_cache: bool,
}

impl Loaded {
    /// Links `component` against `grant` (a failure to link is kept as the reason the
    /// version cannot run) and compiles its operations' schemas.
    pub(super) fn link(
        engine: &Engine,
        manifest: &Manifest,
        key_id: String,
        component: Component,
        from_cache: bool,
        grant: &Grant,
    ) -> Result<Loaded> {
        let label = manifest.label();
        let entrypoints = entrypoints(manifest, &component)?;
        let mut linker = Linker::new(engine);
        link(&mut linker, grant).map_err(|e| Error::Wasm {
            plugin: label.clone(),
            reason: format!("{e:#}"),
        })?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            let missing: Vec<&str> = manifest
                .imports
                .iter()
                .filter(|i| !grant.imports.contains(i))
                .map(|i| i.name())
                .collect();
            if missing.is_empty() {
                format!("cannot link: {e:#}")
            } else {
                format!(
                    "import {} not granted; grant it with `eyeflow plugin grant {} ...`",
                    missing.join(", "),
                    manifest.id
                )
            }
        });
        let mut schemas = BTreeMap::new();
        for (name, op) in &manifest.operations {
            let compile = |schema: &Value| {
                jsonschema::validator_for(schema).map_err(|e| Error::BadManifest {
                    plugin: label.clone(),
                    field: format!("operations.{name}"),
                    reason: e.to_string(),
                })
            };
            schemas.insert(name.clone(), (compile(&op.input)?, compile(&op.output)?));
        }
        Ok(Loaded {
            id: Arc::from(manifest.id.as_str()),
            label: Arc::from(label.as_str()),
            manifest: manifest.clone(),
            key_id,
            component,
            entrypoints,
            grant: Arc::new(grant.clone()),
            pre,
            schemas,
            from_cache,
        })
    }
}

/// Parses `eyeflow:plugin/NAME@VERSION`.
fn eyeflow_interface(name: &str) -> Option<(&str, Option<Version>)> {
    let rest = name.strip_prefix("eyeflow:plugin/")?;
    Some(match rest.split_once('@') {
        Some((iface, version)) => (iface, Version::parse(version).ok()),
        None => (rest, None),
    })
}

/// WASI interfaces a plugin may import (linked with nothing to reach: no preopened
/// directories, no network).
const WASI_ALLOWED: [&str; 5] = [
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
];

/// Checks that `component` imports only what `manifest` declares, at a WIT version this
/// host implements, and WASI only without reach.
pub(super) fn check_imports(
    engine: &Engine,
    manifest: &Manifest,
    component: &Component,
) -> Result<()> {
    let label = manifest.label();
    let incompatible = |reason: String| Error::Incompatible {
        plugin: label.clone(),
        reason,
    };
    for (name, _) in component.component_type().imports(engine) {
        if let Some((_, version)) = eyeflow_interface(name) {
            if version
                .as_ref()
                .is_none_or(|v| v.major != HOST_WIT_VERSION.major || *v > HOST_WIT_VERSION)
            {
                return Err(incompatible(format!(
                    "imports {name}; this host implements eyeflow:plugin@{HOST_WIT_VERSION}"
                )));
            }
            // What it imports against what its manifest declares: the one check `plugin
            // build` runs too.
            manifest.check_imports([name])?;
        } else if !WASI_ALLOWED.iter().any(|prefix| name.starts_with(prefix)) {
            return Err(incompatible(format!(
                "the component imports {name}, which plugins may not use (network access goes through eyeflow:plugin/http)"
            )));
        }
    }
    Ok(())
}

/// Finds the entry points of the component, accepting any exported WIT version the host
/// is compatible with (1.0 ≤ v ≤ the host's).
fn entrypoints(manifest: &Manifest, component: &Component) -> Result<Entrypoints> {
    let label = manifest.label();
    let engine = component.engine();
    let exported: Vec<String> = component
        .component_type()
        .exports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| name.to_owned())
        .collect();
    let find_instance = |iface: &str| -> Option<ComponentExportIndex> {
        let name = exported.iter().find(|name| {
            eyeflow_interface(name).is_some_and(|(i, v)| {
                i == iface
                    && v.is_some_and(|v| v.major == HOST_WIT_VERSION.major && v <= HOST_WIT_VERSION)
            })
        })?;
        component.get_export_index(None, name.as_str())
    };
    let missing = |what: &str| Error::Incompatible {
        plugin: label.clone(),
        reason: format!(
            "a {:?} must export {what} from eyeflow:plugin@1.x; the component exports [{}]",
            manifest.kind,
            exported.join(", ")
        )
        .to_lowercase(),
    };
    let func = |instance: &ComponentExportIndex, name: &str, iface: &str| {
        component
            .get_export_index(Some(instance), name)
            .ok_or_else(|| missing(&format!("function `{name}` of interface `{iface}`")))
    };
    match manifest.kind {
        Kind::Capability => {
            let actions = find_instance("actions").ok_or_else(|| missing("interface `actions`"))?;
            Ok(Entrypoints::Capability {
                describe: func(&actions, "describe", "actions")?,
                invoke: func(&actions, "invoke", "actions")?,
            })
        }
        Kind::Connector => {
            let reader = find_instance("reader").ok_or_else(|| missing("interface `reader`"))?;
            let poll = match find_instance("source") {
                Some(source) if manifest.source => Some(func(&source, "poll", "source")?),
                None if manifest.source => {
                    return Err(missing(
                        "interface `source` (its manifest says `source: true`)",
                    ));
                }
                _ => None,
            };
            Ok(Entrypoints::Connector {
                describe: func(&reader, "describe", "reader")?,
                read: func(&reader, "read", "reader")?,
                poll,
            })
        }
    }
}
