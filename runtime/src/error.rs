//! The runtime crate's error type: every refusal names what was refused and why.

use std::path::PathBuf;

/// Result alias for the runtime crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the runtime's adapters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The embedded store failed.
    #[error("embedded store: {context}: {source}")]
    Store {
        /// What the store was doing.
        context: String,
        /// The fjall error.
        source: fjall::Error,
    },
    /// Another process holds the store's lock (a running node, or the demo, on that data
    /// directory): the store opens in one process at a time.
    #[error("the store of {} is locked by another process (a node running on it)", .data_dir.display())]
    Locked {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// A stored record could not be read back (corruption or a format from the future).
    #[error("embedded store: corrupt record {key}: {reason}")]
    CorruptRecord {
        /// Key of the record.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The store lost records that were durable (a corrupt record fjall's recovery cut, a
    /// truncated file): the node does not start on it.
    #[error(
        "the store of {dir} is damaged: {damage}; the node will not start on it — \
         `eyeflow audit repair --data-dir {dir}` accepts the loss (audited)",
        dir = .data_dir.display()
    )]
    StoreDamaged {
        /// The data directory.
        data_dir: PathBuf,
        /// What was lost, with positions.
        damage: String,
    },
    /// A plugin package is malformed (framing, sizes, manifest).
    #[error("plugin package {what}: {reason}")]
    BadPackage {
        /// The file or plugin named.
        what: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A plugin manifest is invalid.
    #[error("plugin manifest of {plugin}: field `{field}`: {reason}")]
    BadManifest {
        /// Plugin id (or `?` when the id itself is bad).
        plugin: String,
        /// The manifest field at fault.
        field: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A package carries no signature.
    #[error(
        "plugin package {plugin} is unsigned; sign it with `eyeflow plugin sign FILE --key KEY`"
    )]
    UnsignedPackage {
        /// `id@version` of the package.
        plugin: String,
    },
    /// A package is signed by a key the keyring does not hold.
    #[error(
        "plugin package {plugin} is signed by unknown key {key_id}; trust it with `eyeflow keys trust FILE.pub`"
    )]
    UnknownKey {
        /// `id@version` of the package.
        plugin: String,
        /// The signing key id.
        key_id: String,
    },
    /// A package is signed by a revoked key.
    #[error("plugin package {plugin} is signed by revoked key {key_id}")]
    RevokedKey {
        /// `id@version` of the package.
        plugin: String,
        /// The revoked key id.
        key_id: String,
    },
    /// The signature does not match the manifest and component (tampered, or wrong key).
    #[error(
        "plugin package {plugin}: signature by key {key_id} does not verify: the manifest or the component was modified after signing"
    )]
    BadSignature {
        /// `id@version` of the package.
        plugin: String,
        /// The key id named by the package.
        key_id: String,
    },
    /// A plugin version that was revoked cannot be installed or used again.
    #[error("plugin {plugin} is revoked")]
    RevokedPlugin {
        /// `id@version`.
        plugin: String,
    },
    /// The same id and version is installed with different content.
    #[error("plugin {plugin} is already installed with different content; publish a new version")]
    VersionConflict {
        /// `id@version`.
        plugin: String,
    },
    /// A package for an installed plugin id signed by another key than the one pinned for
    /// that id: publishers change only through an explicit transfer.
    #[error(
        "plugin {plugin} is published by key {pinned}, this package is signed by key {offered}; an admin can move the id to the new key with `eyeflow plugin transfer {id} --to-key {offered}` (its grants are cleared)"
    )]
    PublisherChanged {
        /// `id@version` of the package.
        plugin: String,
        /// The plugin id.
        id: String,
        /// The key pinned for the id.
        pinned: String,
        /// The key that signed the package.
        offered: String,
    },
    /// No such plugin in the catalog.
    #[error("plugin {plugin} is not installed")]
    NotInstalled {
        /// `id` or `id@version`.
        plugin: String,
    },
    /// The component's imports or exports do not fit its manifest or this host.
    #[error("plugin {plugin}: {reason}")]
    Incompatible {
        /// `id@version`.
        plugin: String,
        /// What does not fit.
        reason: String,
    },
    /// wasmtime refused to compile, load or link the component.
    #[error("plugin {plugin}: wasmtime: {reason}")]
    Wasm {
        /// `id@version`.
        plugin: String,
        /// The wasmtime error, with its causes.
        reason: String,
    },
    /// A program was refused by the node (capability missing, not deployed, bad version).
    #[error("program {program} refused: {reason}")]
    Refused {
        /// Program id (and version when known).
        program: String,
        /// Why, and what is expected.
        reason: String,
    },
    /// An event was refused before it was journaled (too deep, too large).
    #[error("event {event} refused: {reason}")]
    BadEvent {
        /// The event id.
        event: String,
        /// Why, naming the limit.
        reason: String,
    },
    /// The node's backlog is full, or would make the event wait past its `max_wait`: the
    /// event was not journaled; send it again later.
    #[error("node overloaded: {reason}; the event was not accepted, send it again later")]
    Overloaded {
        /// Which limit, with figures.
        reason: String,
    },
    /// The node could not do what was asked (journal failure, ...).
    #[error("node: {reason}")]
    Node {
        /// What failed.
        reason: String,
    },
    /// A field device could not be reached or did not answer.
    #[error("device `{device}`: {reason}")]
    Device {
        /// The device's id.
        device: String,
        /// Why.
        reason: String,
    },
    /// No such execution, program or plugin.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The request contradicts the current state (e.g. approving an instruction that does
    /// not wait for a decision).
    #[error("{what}: {reason}")]
    Conflict {
        /// What was asked.
        what: String,
        /// Why it cannot be done now.
        reason: String,
    },
    /// A production backend (Redis, Kafka, Vault/OpenBao) is misconfigured, unreachable or
    /// refused the node's credentials.
    #[error("{backend}: {reason}")]
    Backend {
        /// Which backend: `redis`, `kafka`, `vault`.
        backend: &'static str,
        /// What failed, naming the address (without credentials) and what to check (never
        /// a secret value).
        reason: String,
    },
    /// The configuration (a file, or one of its values) is unusable.
    #[error("configuration {what}: {reason}")]
    BadConfig {
        /// The file or the setting, as written in the configuration (`kafka.audit_topic`).
        what: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// A Kafka client could not be created or refused a request.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What the client was doing.
        context: String,
        /// The librdkafka error.
        source: rdkafka::error::KafkaError,
    },
    /// A key file or the keyring is unusable.
    #[error(transparent)]
    Ir(#[from] eyeflow_ir::Error),
    /// A conformance vector of the MCU profile could not be generated or run.
    #[error("vector {name}: {reason}")]
    Vector {
        /// The vector (or its program).
        name: String,
        /// What is wrong, and what is expected.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub(crate) fn kafka(
        context: impl Into<String>,
    ) -> impl FnOnce(rdkafka::error::KafkaError) -> Error {
        let context = context.into();
        move |source| Error::Kafka { context, source }
    }

    pub(crate) fn store(context: impl Into<String>) -> impl FnOnce(fjall::Error) -> Error {
        let context = context.into();
        move |source| Error::Store { context, source }
    }
}
