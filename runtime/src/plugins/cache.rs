//! The precompiled-component cache under `DATA_DIR/plugins/cache`, so a restarting node
//! does not recompile its plugins. An artifact is named by the component's SHA-256 and
//! the engine's compatibility hash and stored with its own SHA-256, checked before
//! wasmtime maps it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::{Error, Result};

/// A component cache in one directory for one engine configuration.
pub(crate) struct ComponentCache {
    dir: PathBuf,
    engine_tag: String,
}

impl ComponentCache {
    pub(crate) fn new(dir: PathBuf, engine: &Engine) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_tag: format!("{:016x}", hasher.finish()),
        }
    }

    fn path(&self, component_digest: &[u8; 32]) -> PathBuf {
        self.dir.join(format!(
            "{}-{}.cwasm",
            hex::encode(component_digest),
            self.engine_tag
        ))
    }

    /// The compiled component: from the cache when a valid artifact exists, otherwise
    /// compiled now and cached. Returns whether it came from the cache.
    pub(crate) fn load(
        &self,
        engine: &Engine,
        label: &str,
        component: &[u8],
        component_digest: &[u8; 32],
    ) -> Result<(Component, bool)> {
        let path = self.path(component_digest);
        if let Some(component) = read_artifact(engine, &path) {
            return Ok((component, true));
        }
        let wasm_error = |e: wasmtime::Error| Error::Wasm {
            plugin: label.to_owned(),
            reason: format!("{e:#}"),
        };
        let compiled = Component::new(engine, component).map_err(wasm_error)?;
        let artifact = compiled.serialize().map_err(wasm_error)?;
        self.write_artifact(&path, &artifact)?;
        Ok((compiled, false))
    }

    fn write_artifact(&self, path: &Path, artifact: &[u8]) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(Error::io(&self.dir))?;
        let mut content = Sha256::digest(artifact).to_vec();
        content.extend_from_slice(artifact);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &content).map_err(Error::io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(Error::io(path))
    }
}

/// A cached artifact, if present, intact and loadable by this engine.
fn read_artifact(engine: &Engine, path: &Path) -> Option<Component> {
    let content = std::fs::read(path).ok()?;
    let (digest, artifact) = content.split_at_checked(32)?;
    if Sha256::digest(artifact).as_slice() != digest {
        tracing::warn!(path = %path.display(), "corrupt precompiled plugin artifact; recompiling");
        return None;
    }
    // SAFETY: `Component::deserialize` trusts its input to be an artifact produced by
    // `Component::serialize` of a compatible engine. This one was written by
    // `write_artifact` above into the node's own data directory, its SHA-256 matches the
    // one stored with it (so it is the artifact we wrote, not a truncated or corrupted
    // file), and wasmtime itself rejects artifacts from an incompatible engine. The data
    // directory must be writable only by the node's user, like its signing keys.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, artifact) };
    component
        .inspect_err(|e| tracing::warn!(path = %path.display(), "unusable precompiled plugin artifact ({e}); recompiling"))
        .ok()
}
