//! Publisher pinning: a plugin id keeps the key that first published it; another key's
//! package is refused until an admin transfers the id, which clears its grant and is
//! audited.

use eyeflow_ir::keys::key_id;
use eyeflow_runtime::Error;
use eyeflow_runtime::audit::{AuditConfig, FjallAudit, canonical_json};
use eyeflow_runtime::plugins::catalog::{PinnedBy, Publisher};
use eyeflow_runtime::plugins::{GrantChange, Installed, Package};
use eyeflow_runtime::store::{Durability, Space};
use sha2::{Digest, Sha256};

use crate::support::{Node, key, parts, signed};

const ID: &str = "fixture-echo";

/// A node trusting `key(1)` (the publisher) and `key(2)` (another trusted key), with
/// fixture-echo@1.0.0 by `key(1)` installed and granted a secret.
fn node_with_granted_plugin() -> Node {
    let node = Node::new();
    node.host
        .catalog()
        .store()
        .trust_key(&key(2).verifying_key())
        .expect("trust key 2");
    node.install("fixture-echo");
    node.host
        .change_grant(ID, &[GrantChange::AllowSecret("webhook-token".into())])
        .expect("grant");
    node
}

fn secrets_granted(node: &Node) -> Vec<String> {
    node.host
        .catalog()
        .grant(ID)
        .expect("grant read")
        .map(|g| g.secrets.into_iter().collect())
        .unwrap_or_default()
}

/// fixture-echo-v2's component under its manifest with `version` as version, signed by
/// `signer`: a new release.
fn release(version: &str, signer: u8) -> Package {
    let (manifest, wasm) = parts("fixture-echo-v2");
    let mut manifest: serde_json::Value = serde_json::from_slice(&manifest).expect("manifest");
    manifest["version"] = version.into();
    let mut package =
        Package::new(serde_json::to_vec(&manifest).expect("json"), wasm).expect("package");
    package.sign(&key(signer));
    package
}

fn audit(node: &Node) -> FjallAudit {
    FjallAudit::open(
        node.host.catalog().store().clone(),
        AuditConfig {
            durability: Durability::Sync,
            ..AuditConfig::default()
        },
    )
    .expect("audit")
}

#[test]
fn another_trusted_key_cannot_publish_an_installed_id() {
    let mut node = node_with_granted_plugin();
    let (first, second) = (
        key_id(&key(1).verifying_key()),
        key_id(&key(2).verifying_key()),
    );
    for _ in 0..2 {
        let err = node
            .host
            .install(&signed("fixture-echo-v2", &key(2)))
            .expect_err("another publisher is refused");
        assert!(matches!(err, Error::PublisherChanged { .. }), "{err}");
        let text = err.to_string();
        for part in [
            "fixture-echo@2.0.0",
            first.as_str(),
            second.as_str(),
            "eyeflow plugin transfer fixture-echo --to-key",
        ] {
            assert!(text.contains(part), "`{part}` missing from: {text}");
        }
        assert_eq!(secrets_granted(&node), ["webhook-token"]);
        assert!(
            node.host
                .list()
                .expect("list")
                .iter()
                .all(|p| p.entry.key_id == first),
            "nothing by the second key was catalogued"
        );
        // The pin is durable.
        node.reopen();
        node.host
            .catalog()
            .store()
            .trust_key(&key(2).verifying_key())
            .expect("trust key 2");
    }
    // The pinned publisher's own new version installs, grant kept.
    assert!(matches!(
        node.host.install(&release("2.0.0", 1)),
        Ok(Installed::New { .. })
    ));
    assert_eq!(secrets_granted(&node), ["webhook-token"]);
    let pin = node
        .host
        .catalog()
        .publisher(ID)
        .expect("read")
        .expect("pinned");
    assert_eq!(pin.key_id, first);
    assert_eq!(pin.pinned_by, PinnedBy::Install);
}

#[test]
fn a_transfer_repins_clears_the_grant_and_is_audited() {
    let node = node_with_granted_plugin();
    let (first, second) = (
        key_id(&key(1).verifying_key()),
        key_id(&key(2).verifying_key()),
    );
    let audit = audit(&node);

    // Refusals: unknown id, untrusted key, the key already pinned.
    let err = node
        .host
        .transfer("nope", &second, &audit)
        .expect_err("no id");
    assert!(matches!(err, Error::NotInstalled { .. }), "{err}");
    let stranger = key_id(&key(9).verifying_key());
    let err = node
        .host
        .transfer(ID, &stranger, &audit)
        .expect_err("untrusted");
    assert!(matches!(err, Error::UnknownKey { .. }), "{err}");
    let err = node
        .host
        .transfer(ID, &first, &audit)
        .expect_err("same key");
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(audit.head().0, 0, "refused transfers are not audited");
    assert_eq!(secrets_granted(&node), ["webhook-token"]);

    let transfer = node.host.transfer(ID, &second, &audit).expect("transfer");
    assert_eq!(
        (transfer.from.as_str(), transfer.to.as_str()),
        (first.as_str(), second.as_str())
    );
    assert!(node.host.catalog().grant(ID).expect("read").is_none());
    assert!(secrets_granted(&node).is_empty());

    // The transfer is the chain's entry, with the digest of {from, to}.
    let entries = audit.entries(0, 10).expect("entries");
    assert_eq!(entries.len(), 1);
    let entry = &entries[0].entry;
    assert_eq!(entry.opcode, "PLUGIN_TRANSFER");
    assert_eq!(entry.instruction_id, ID);
    let expected = hex::encode(Sha256::digest(canonical_json(
        &serde_json::json!({ "from": first, "to": second }),
    )));
    assert_eq!(entry.input_digest, expected);
    eyeflow_runtime::audit::verify(node.host.catalog().store(), None)
        .expect("read")
        .expect("chain verifies");

    // The new publisher installs and starts with no HTTP host and no secret.
    assert!(matches!(
        node.host.install(&signed("fixture-echo-v2", &key(2))),
        Ok(Installed::New { .. })
    ));
    let grant = node
        .host
        .catalog()
        .grant(ID)
        .expect("read")
        .expect("initial grant");
    assert!(
        grant.secrets.is_empty() && grant.http_hosts.is_empty(),
        "{grant:?}"
    );
    let invoked = node
        .invoke(ID, "echo", serde_json::json!({ "x": 1 }))
        .expect("the new publisher's version serves");
    assert!(invoked.to_string().contains("2.0.0"), "{invoked}");

    // The previous publisher's new versions are refused now.
    let err = node
        .host
        .install(&release("3.0.0", 1))
        .expect_err("the old publisher is refused");
    assert!(matches!(err, Error::PublisherChanged { .. }), "{err}");
    let pin = node
        .host
        .catalog()
        .publisher(ID)
        .expect("read")
        .expect("pinned");
    assert_eq!(
        (pin.key_id.as_str(), pin.pinned_by),
        (second.as_str(), PinnedBy::Transfer)
    );
}

#[test]
fn a_data_dir_from_before_pinning_pins_the_newest_versions_key() {
    let mut node = node_with_granted_plugin();
    let store = node.host.catalog().store().clone();
    // A data directory written before publisher pins existed: versions, no pin.
    store
        .remove(Space::Publishers, ID.as_bytes())
        .expect("remove");
    drop(store);
    node.reopen();
    node.host
        .catalog()
        .store()
        .trust_key(&key(2).verifying_key())
        .expect("trust key 2");
    let pin: Publisher = node
        .host
        .catalog()
        .store()
        .get_json(Space::Publishers, ID)
        .expect("read")
        .expect("pinned at open");
    assert_eq!(pin.key_id, key_id(&key(1).verifying_key()));
    assert_eq!(pin.pinned_by, PinnedBy::Catalog);
    let err = node
        .host
        .install(&signed("fixture-echo-v2", &key(2)))
        .expect_err("another publisher is refused");
    assert!(matches!(err, Error::PublisherChanged { .. }), "{err}");
    assert_eq!(secrets_granted(&node), ["webhook-token"]);
}
