//! The plugin manifest: what a package claims to be (id, version, kind), what it provides
//! (capabilities with versions), what it wants from the host (imports) and the JSON schemas
//! of its operations. It travels inside the signed package as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use eyeflow_actors::ports::OnResume;
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Error, Result};

/// The WIT package version this host implements; plugins built for `1.x` with x ≤ 2 load.
pub const HOST_WIT_VERSION: Version = Version::new(1, 2, 0);

/// Longest accepted manifest, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;

/// What a plugin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Reads resources by key (world `connector`); optionally an event source.
    Connector,
    /// Performs actions (world `capability`).
    Capability,
}

impl Kind {
    /// The WIT interface this kind exports for its main entry point.
    pub fn main_interface(self) -> &'static str {
        match self {
            Kind::Connector => "reader",
            Kind::Capability => "actions",
        }
    }
}

/// A host interface a plugin may import (and an operator may grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Import {
    /// `eyeflow:plugin/log`.
    Log,
    /// `eyeflow:plugin/http` (to granted hosts only).
    Http,
    /// `eyeflow:plugin/secrets` (granted names only).
    Secrets,
    /// `eyeflow:plugin/kv`, the plugin's scratch store.
    Kv,
    /// `eyeflow:plugin/clock`.
    Clock,
}

impl Import {
    /// Every import, in WIT order.
    pub const ALL: [Import; 5] = [Self::Log, Self::Http, Self::Secrets, Self::Kv, Self::Clock];

    /// The interface name in WIT.
    pub fn name(self) -> &'static str {
        match self {
            Self::Log => "log",
            Self::Http => "http",
            Self::Secrets => "secrets",
            Self::Kv => "kv",
            Self::Clock => "clock",
        }
    }

    /// The import named `name` in WIT, if the host knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.name() == name)
    }
}

impl fmt::Display for Import {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A capability a plugin provides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provided {
    /// Capability id as programs name it.
    pub capability: String,
    /// Its version (programs give semver requirements against it).
    pub version: Version,
}

/// Schemas of one operation (an action, or a connector's `read` / `poll`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// JSON Schema of the input (params for `read`).
    pub input: Value,
    /// JSON Schema of the output.
    pub output: Value,
    /// What the runtime does with this action when the node stopped after journaling its
    /// intent and before journaling its result (capabilities only; absent = `ambiguous`).
    #[serde(default, skip_serializing_if = "Resume::is_ambiguous")]
    pub on_resume: Resume,
}

/// An action's declaration for a resume that finds its result unknown (the manifest form of
/// [`OnResume`]): `"reissue"`, `"ambiguous"` or `{"read_back": "<read-only action>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resume {
    /// The capability applies an idempotency key once: invoke it again under the same key.
    Reissue,
    /// Read the device back with this action (same input) instead of driving it again.
    ReadBack(String),
    /// Neither: the operator decides.
    #[default]
    Ambiguous,
}

impl Resume {
    fn is_ambiguous(&self) -> bool {
        *self == Self::Ambiguous
    }

    /// The port's form.
    pub fn to_port(&self) -> OnResume {
        match self {
            Self::Reissue => OnResume::Reissue,
            Self::ReadBack(action) => OnResume::ReadBack(action.clone()),
            Self::Ambiguous => OnResume::Ambiguous,
        }
    }
}

/// A plugin manifest (`eyeflow-plugin.json` beside the crate, inside the package).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Plugin id: lowercase letters, digits and `-`, at most 63 characters.
    pub id: String,
    /// Plugin version.
    pub version: Version,
    /// Connector or capability.
    pub kind: Kind,
    /// A connector that is also an event source (polled with a cursor).
    #[serde(default)]
    pub source: bool,
    /// The WIT package version the component was built against.
    pub wit: Version,
    /// One line for operators.
    #[serde(default)]
    pub description: String,
    /// Capabilities provided, with versions.
    pub provides: Vec<Provided>,
    /// Host interfaces the component imports.
    #[serde(default)]
    pub imports: BTreeSet<Import>,
    /// JSON schemas by operation name.
    #[serde(default)]
    pub operations: BTreeMap<String, Operation>,
}

impl Manifest {
    /// Parses and checks a manifest.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(bad(
                "?",
                "manifest",
                format!(
                    "{} bytes; expected at most {MAX_MANIFEST_BYTES}",
                    bytes.len()
                ),
            ));
        }
        let manifest: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| bad("?", "manifest", format!("not a valid manifest: {e}")))?;
        manifest.check()?;
        Ok(manifest)
    }

    /// `id@version`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }

    /// Checks ids, versions, the WIT version and that every schema compiles.
    pub fn check(&self) -> Result<()> {
        let label = self.label();
        if !valid_id(&self.id) {
            return Err(bad(
                &self.id,
                "id",
                "expected 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
            ));
        }
        if self.wit.major != HOST_WIT_VERSION.major || self.wit > HOST_WIT_VERSION {
            return Err(bad(
                &label,
                "wit",
                format!(
                    "built for WIT {}, this host implements {HOST_WIT_VERSION}; expected 1.x at most {HOST_WIT_VERSION}",
                    self.wit
                ),
            ));
        }
        if self.provides.is_empty() {
            return Err(bad(
                &label,
                "provides",
                "empty; expected at least one {\"capability\", \"version\"}",
            ));
        }
        for provided in &self.provides {
            if !valid_id(&provided.capability) {
                return Err(bad(
                    &label,
                    "provides.capability",
                    format!(
                        "`{}`: expected 1-63 characters of a-z, 0-9 and '-'",
                        provided.capability
                    ),
                ));
            }
        }
        if self.source && self.kind != Kind::Connector {
            return Err(bad(
                &label,
                "source",
                "only a connector can be an event source",
            ));
        }
        if self.kind == Kind::Connector && !self.operations.contains_key("read") {
            return Err(bad(
                &label,
                "operations",
                "a connector must describe its `read` operation",
            ));
        }
        for (name, op) in &self.operations {
            for (which, schema) in [("input", &op.input), ("output", &op.output)] {
                jsonschema::validator_for(schema).map_err(|e| {
                    bad(
                        &label,
                        &format!("operations.{name}.{which}"),
                        format!("not a valid JSON Schema: {e}"),
                    )
                })?;
            }
            if let Resume::ReadBack(read) = &op.on_resume
                && (read == name || !self.operations.contains_key(read))
            {
                return Err(bad(
                    &label,
                    &format!("operations.{name}.on_resume"),
                    format!(
                        "reads back with `{read}`, which is not another operation of this plugin"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Compares the interfaces a component imports (`names` as its component type lists
    /// them, such as `eyeflow:plugin/kv@1.2.0`) with `imports`. An `eyeflow:plugin`
    /// interface it imports without the manifest declaring it, or that the host does not
    /// provide, is an error naming it: the node refuses such a package at install. The
    /// declared imports it does not use are returned: harmless to run, but an operator
    /// would be asked to grant them for nothing. Other (WASI) imports are the host's to
    /// judge at install.
    pub fn check_imports<'a>(
        &self,
        names: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<Import>> {
        let mut unused = self.imports.clone();
        for name in names {
            let Some(rest) = name.strip_prefix("eyeflow:plugin/") else {
                continue;
            };
            let interface = rest
                .split_once('@')
                .map_or(rest, |(interface, _)| interface);
            if interface == "types" {
                continue;
            }
            let incompatible = |reason: String| Error::Incompatible {
                plugin: self.label(),
                reason,
            };
            match Import::from_name(interface) {
                Some(import) if self.imports.contains(&import) => {
                    unused.remove(&import);
                }
                Some(import) => {
                    return Err(incompatible(format!(
                        "the component imports {name} but its manifest does not declare `{import}` in `imports`; add \"{import}\" there"
                    )));
                }
                None => {
                    let provided: Vec<&str> = Import::ALL.iter().map(|i| i.name()).collect();
                    return Err(incompatible(format!(
                        "the component imports {name}, which this host does not provide (it provides {})",
                        provided.join(", ")
                    )));
                }
            }
        }
        Ok(unused.into_iter().collect())
    }

    /// Whether this plugin provides capability `id` at a version matching `req`; returns
    /// that version.
    pub fn provides_matching(&self, id: &str, req: &semver::VersionReq) -> Option<&Version> {
        self.provides
            .iter()
            .find(|p| p.capability == id && req.matches(&p.version))
            .map(|p| &p.version)
    }
}

fn valid_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

fn bad(plugin: &str, field: &str, reason: impl Into<String>) -> Error {
    Error::BadManifest {
        plugin: plugin.to_owned(),
        field: field.to_owned(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Value {
        serde_json::json!({
            "id": "valve-sim", "version": "1.0.0", "kind": "capability", "wit": "1.1.0",
            "provides": [{"capability": "valve-sim", "version": "1.0.0"}],
            "imports": ["log", "kv"],
            "operations": {"open": {"input": {"type": "object"}, "output": {"type": "object"}}}
        })
    }

    fn refused(edit: impl FnOnce(&mut Value)) -> String {
        let mut m = manifest();
        edit(&mut m);
        Manifest::from_json(&serde_json::to_vec(&m).unwrap())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_good_manifest_parses() {
        let m = Manifest::from_json(&serde_json::to_vec(&manifest()).unwrap()).unwrap();
        assert_eq!(m.label(), "valve-sim@1.0.0");
        assert!(m.imports.contains(&Import::Kv));
        let req = semver::VersionReq::parse("^1").unwrap();
        assert_eq!(
            m.provides_matching("valve-sim", &req),
            Some(&Version::new(1, 0, 0))
        );
        assert_eq!(
            m.provides_matching("valve-sim", &semver::VersionReq::parse("^2").unwrap()),
            None
        );
    }

    #[test]
    fn every_older_minor_wit_is_accepted() {
        for wit in ["1.0.0", "1.1.0", "1.2.0"] {
            let mut m = manifest();
            m["wit"] = wit.into();
            assert!(
                Manifest::from_json(&serde_json::to_vec(&m).unwrap()).is_ok(),
                "wit {wit}"
            );
        }
        assert!(refused(|m| m["wit"] = "1.3.0".into()).contains("expected 1.x at most 1.2.0"));
    }

    #[test]
    fn imports_are_checked_against_the_component() {
        let m = Manifest::from_json(manifest().to_string().as_bytes()).unwrap();
        // Declares log and kv.
        let unused = m
            .check_imports([
                "eyeflow:plugin/types@1.2.0",
                "eyeflow:plugin/log@1.2.0",
                "wasi:io/streams@0.2.0",
            ])
            .unwrap();
        assert_eq!(unused, [Import::Kv]);
        assert_eq!(
            m.check_imports(["eyeflow:plugin/kv@1.0.0", "eyeflow:plugin/log@1.2.0"])
                .unwrap(),
            []
        );
        let undeclared = m
            .check_imports(["eyeflow:plugin/log@1.2.0", "eyeflow:plugin/secrets@1.2.0"])
            .unwrap_err()
            .to_string();
        assert!(
            undeclared.contains("eyeflow:plugin/secrets@1.2.0") && undeclared.contains("`secrets`"),
            "{undeclared}"
        );
        let unknown = m
            .check_imports(["eyeflow:plugin/sockets@1.2.0"])
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("does not provide"), "{unknown}");
    }

    #[test]
    fn bad_manifests_say_which_field() {
        assert!(refused(|m| m["id"] = "Valve_Sim".into()).contains("field `id`"));
        assert!(refused(|m| m["wit"] = "2.0.0".into()).contains("field `wit`"));
        assert!(refused(|m| m["wit"] = "1.9.0".into()).contains("this host implements 1.2.0"));
        assert!(refused(|m| m["provides"] = serde_json::json!([])).contains("field `provides`"));
        assert!(
            refused(|m| m["imports"] = serde_json::json!(["sockets"]))
                .contains("unknown variant `sockets`")
        );
        assert!(refused(|m| m["extra"] = 1.into()).contains("unknown field `extra`"));
        assert!(
            refused(|m| m["operations"]["open"]["input"] = serde_json::json!({"type": 12}))
                .contains("operations.open.input")
        );
        assert!(refused(|m| m["source"] = true.into()).contains("field `source`"));
        assert!(refused(|m| m["kind"] = "connector".into()).contains("`read`"));
        assert!(
            refused(
                |m| m["operations"]["open"]["on_resume"] = serde_json::json!({"read_back": "get"})
            )
            .contains("operations.open.on_resume")
        );
        assert!(
            refused(|m| m["operations"]["open"]["on_resume"] = "again".into())
                .contains("unknown variant `again`")
        );
    }

    #[test]
    fn actions_declare_what_a_resume_does() {
        let mut m = manifest();
        m["operations"]["read"] =
            serde_json::json!({"input": {}, "output": {}, "on_resume": "reissue"});
        m["operations"]["open"]["on_resume"] = serde_json::json!({"read_back": "read"});
        let m = Manifest::from_json(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(
            m.operations["open"].on_resume.to_port(),
            OnResume::ReadBack("read".into())
        );
        assert_eq!(m.operations["read"].on_resume.to_port(), OnResume::Reissue);
        let plain = Manifest::from_json(&serde_json::to_vec(&manifest()).unwrap()).unwrap();
        assert_eq!(
            plain.operations["open"].on_resume.to_port(),
            OnResume::Ambiguous
        );
    }
}
