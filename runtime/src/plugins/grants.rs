//! Operator grants: which host interfaces a plugin id may use, which HTTP hosts it may
//! reach and which secrets it may read. Grants are persisted per plugin id, carry a version
//! that every change bumps, and are checked on every host call, so a revocation fails the
//! next call.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use url::Url;

use super::manifest::{Import, Manifest};

/// What the operator allows one plugin id (all its versions).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Bumped by every change.
    pub version: u64,
    /// Interfaces that may be linked.
    pub imports: BTreeSet<Import>,
    /// Reachable hosts: `host` (any port) or `host:port`.
    pub http_hosts: BTreeSet<String>,
    /// Readable secret names.
    pub secrets: BTreeSet<String>,
}

/// One change to a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantChange {
    /// Allow `host` or `host:port` (and the `http` import).
    AllowHttp(String),
    /// Stop allowing `host` or `host:port`.
    DenyHttp(String),
    /// Allow reading secret `name` (and the `secrets` import).
    AllowSecret(String),
    /// Stop allowing secret `name`.
    DenySecret(String),
    /// Link an interface.
    AllowImport(Import),
    /// Stop linking an interface.
    DenyImport(Import),
}

impl Grant {
    /// The grant a fresh installation gets: the interfaces its manifest asks for are
    /// linked, but no HTTP host and no secret name is reachable until the operator grants
    /// it (`eyeflow plugin grant ID --http HOST --secret NAME`).
    pub fn initial(manifest: &Manifest) -> Self {
        Self {
            version: 1,
            imports: manifest.imports.clone(),
            ..Self::default()
        }
    }

    /// Applies `change`, bumping the version.
    pub fn apply(&mut self, change: &GrantChange) {
        match change {
            GrantChange::AllowHttp(host) => {
                self.http_hosts.insert(host.to_ascii_lowercase());
                self.imports.insert(Import::Http);
            }
            GrantChange::DenyHttp(host) => {
                self.http_hosts.remove(&host.to_ascii_lowercase());
            }
            GrantChange::AllowSecret(name) => {
                self.secrets.insert(name.clone());
                self.imports.insert(Import::Secrets);
            }
            GrantChange::DenySecret(name) => {
                self.secrets.remove(name);
            }
            GrantChange::AllowImport(import) => {
                self.imports.insert(*import);
            }
            GrantChange::DenyImport(import) => {
                self.imports.remove(import);
            }
        }
        self.version += 1;
    }

    /// Whether `url` may be requested: http(s), and its host (with or without the port)
    /// is granted.
    pub fn allows_url(&self, url: &Url) -> bool {
        if !matches!(url.scheme(), "http" | "https") || !self.imports.contains(&Import::Http) {
            return false;
        }
        url_host_listed(url, |entry| self.http_hosts.contains(entry))
    }

    /// Whether secret `name` may be read.
    pub fn allows_secret(&self, name: &str) -> bool {
        self.imports.contains(&Import::Secrets) && self.secrets.contains(name)
    }
}

/// Whether `url`'s host, alone or as `host:port` (lowercase), is `listed`: the matching rule of
/// plugin HTTP grants and of the node's egress allow-list.
pub(crate) fn url_host_listed(url: &Url, listed: impl Fn(&str) -> bool) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    listed(&host)
        || url
            .port_or_known_default()
            .is_some_and(|port| listed(&format!("{host}:{port}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_match_host_or_host_and_port() {
        let mut grant = Grant::default();
        grant.apply(&GrantChange::AllowHttp("127.0.0.1:8080".into()));
        grant.apply(&GrantChange::AllowHttp("Example.org".into()));
        let ok = |grant: &Grant, u: &str| grant.allows_url(&Url::parse(u).unwrap());
        assert!(ok(&grant, "http://127.0.0.1:8080/x"));
        assert!(!ok(&grant, "http://127.0.0.1:8081/x"));
        assert!(ok(&grant, "https://example.org/a"));
        assert!(ok(&grant, "http://example.org:9000/a"));
        assert!(!ok(&grant, "http://evil.example.org/a"));
        assert!(!ok(&grant, "file:///etc/passwd"));
        grant.apply(&GrantChange::DenyHttp("127.0.0.1:8080".into()));
        assert!(!ok(&grant, "http://127.0.0.1:8080/x"));
        assert_eq!(grant.version, 3);
    }

    #[test]
    fn secrets_need_the_name_and_the_import() {
        let mut grant = Grant::default();
        grant.apply(&GrantChange::AllowSecret("token".into()));
        assert!(grant.allows_secret("token"));
        assert!(!grant.allows_secret("other"));
        grant.apply(&GrantChange::DenyImport(Import::Secrets));
        assert!(!grant.allows_secret("token"));
    }
}
