//! The node service as an operator runs it: `eyeflow node` as a child process, its HTTP
//! API behind bearer tokens with roles, the client commands, and the SIGTERM drain.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Daemon, Setup, eyeflow, stderr, stdout};

const ORDER_RULE: &str = r#"
id: order-check
version: 1.0.0
requires:
  valve-sim: ^1.0
triggers:
  - kind: webhook
    source: orders
    filter: event.qty > 0
instructions:
  - id: doubled
    op: EVAL
    expression: event.qty * 2
    next: open_valve
  - id: open_valve
    op: CALL_ACTION
    capability: valve-sim
    action: set
    params:
      valve: "'valve/v-7'"
      position: "50"
    resource_key: valve/v-7
    requires_human_validation: true
    next: done
  - id: done
    op: RETURN
    expression: "{'doubled': doubled}"
"#;

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[test]
fn tokens_and_roles_guard_every_endpoint() {
    let setup = Setup::new();
    let node = Daemon::start(&setup, &[]);
    // Public.
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let (status, _) = node.get(path, None);
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // No token, a forged token, a token of another node.
    let (status, body) = node.get("/api/programs", None);
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "unauthorized");
    let forged = node.viewer.replacen("viewer", "admin", 1);
    let (status, _) = node.get("/api/programs", Some(&forged));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let other = Setup::new();
    let foreign = other.issue("admin");
    let (status, _) = node.get("/api/programs", Some(&foreign));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Viewer reads, may not act.
    let (status, _) = node.get("/api/programs", Some(&node.viewer));
    assert_eq!(status, StatusCode::OK);
    let (status, body) = node.get("/metrics", None);
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = node.post_bytes("/api/programs", b"x", Some(&node.viewer));
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_code(&body), "forbidden");
    // Operator sends events and compiles, may not deploy or install.
    let (status, body) = node.post_bytes("/api/programs", b"x", Some(&node.operator));
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = node.post_bytes("/api/plugins", b"x", Some(&node.operator));
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = node.post_text("/api/rules/compile", ORDER_RULE, Some(&node.viewer));
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = node.post_text("/api/rules/compile", ORDER_RULE, Some(&node.operator));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["program_id"], "order-check");
    // Admin may do all of it; unknown routes and methods are JSON errors too.
    let (status, body) = node.get("/api/nowhere", Some(&node.admin));
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "no_route");
    let (status, body) = node.request(reqwest::Method::PUT, "/api/programs", Some(&node.admin));
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_code(&body), "method_not_allowed");
}

#[test]
fn programs_events_approvals_audit_and_plugins_through_the_api() {
    let setup = Setup::new();
    let node = Daemon::start(
        &setup,
        &["max_body_bytes = 4096", "max_upload_bytes = 400000"],
    );
    let admin = Some(node.admin.as_str());
    let operator = Some(node.operator.as_str());
    let viewer = Some(node.viewer.as_str());

    // Plugins: unsigned refused, signed installed, listed.
    let (status, body) =
        node.post_bytes("/api/plugins", &setup.unsigned_package("valve-sim"), admin);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "unsigned", "{body}");
    let (status, body) = node.post_bytes("/api/plugins", &setup.package("valve-sim"), admin);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["new"], true);
    let (status, body) = node.get("/api/plugins", viewer);
    assert_eq!(status, StatusCode::OK);
    assert!(body["plugins"].to_string().contains("valve-sim@"), "{body}");

    // Programs: compile through the API gives an unsigned program, which deploy refuses.
    let (_, compiled) = node.post_text("/api/rules/compile", ORDER_RULE, operator);
    let unsigned = support::base64(compiled["ir_base64"].as_str().expect("ir"));
    let (status, body) = node.post_bytes("/api/programs", &unsigned, admin);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "unsigned");
    let (status, body) = node.post_bytes("/api/programs", b"\x0a\xff garbage", admin);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = node.post_bytes("/api/programs", &vec![0u8; 500_000], admin);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_code(&body), "too_large");
    let (status, body) = node.post_text("/api/rules/compile", "id: [unclosed", operator);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(error_code(&body), "compile_error");
    let signed = setup.compile(ORDER_RULE);
    let (status, body) = node.post_bytes("/api/programs", &signed, admin);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["id"], "order-check");
    let (_, body) = node.get("/api/programs", viewer);
    assert_eq!(body["programs"][0]["active"], true, "{body}");

    // A version the deployed program's `^1.0` does not select installs, and the answer says
    // that this program will not use it.
    let (status, body) = node.post_bytes(
        "/api/plugins",
        &setup.package_by("valve-sim", setup.key(), Some("2.0.0")),
        admin,
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["unselected"],
        json!(["program order-check@1.0.0 requires valve-sim ^1.0, which does not select 2.0.0"]),
        "{body}"
    );

    // Events: accepted, deduplicated by id, filtered, refused when malformed or too big.
    let (status, body) = node.post_json(
        "/api/events/orders",
        &json!({"qty": 21}),
        Some("order-1"),
        operator,
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let execution = body["routed"][0]["execution_id"]
        .as_str()
        .expect("execution id")
        .to_owned();
    let (_, again) = node.post_json(
        "/api/events/orders",
        &json!({"qty": 21}),
        Some("order-1"),
        operator,
    );
    assert_eq!(again["routed"][0]["duplicate"], true, "{again}");
    assert_eq!(again["routed"][0]["execution_id"], execution.as_str());
    let (_, filtered) = node.post_json("/api/events/orders", &json!({"qty": 0}), None, operator);
    assert_eq!(filtered["routed"][0]["filtered_out"], true, "{filtered}");
    let (status, body) = node.post_raw_json("/api/events/orders", b"{not json", operator);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "bad_request");
    let big = json!({"qty": 1, "pad": "x".repeat(5000)});
    let (status, _) = node.post_json("/api/events/orders", &big, None, operator);
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, body) = node.post_json("/api/events/nobody", &json!({}), None, operator);
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "no_listener");

    // Approval: the execution waits; approving ahead of time or twice is refused.
    let path = format!("/api/executions/{execution}");
    let view = node.wait_for(&path, viewer, |v| v["status"] == "awaiting_approval");
    assert_eq!(view["event"]["payload"]["qty"], 21);
    let (status, body) = node.post_json(
        &format!("{path}/approvals/done"),
        &json!({"approve": true}),
        None,
        operator,
    );
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = node.post_json(
        &format!("{path}/approvals/open_valve"),
        &json!({"approve": "yes"}),
        None,
        operator,
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = node.post_json(
        &format!("{path}/approvals/open_valve"),
        &json!({"approve": true}),
        None,
        operator,
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let view = node.wait_for(&path, viewer, |v| v["status"] == "completed");
    assert_eq!(view["outcome"]["value"]["doubled"], 42, "{view}");
    let audit = view["audit"].as_array().expect("audit hashes");
    assert!(audit.len() >= 3, "{view}");
    assert!(
        audit
            .iter()
            .all(|a| a["hash"].as_str().map(str::len) == Some(64))
    );
    let (status, _) = node.post_json(
        &format!("{path}/approvals/open_valve"),
        &json!({"approve": false}),
        None,
        operator,
    );
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, body) = node.get("/api/executions/no-such-execution", viewer);
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "not_found");

    // Audit: entries page and a verified chain.
    let (status, body) = node.get("/api/audit?from=0&limit=2", viewer);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["entries"].as_array().map(Vec::len), Some(2), "{body}");
    assert_eq!(body["entries"][1]["index"], 1);
    let (_, verified) = node.get("/api/audit/verify", viewer);
    assert_eq!(verified["ok"], true, "{verified}");
    assert!(verified["entries"].as_u64() >= Some(3));

    // Metrics an operator needs.
    let text = node.get_text("/metrics", viewer);
    for metric in [
        "eyeflow_executions_total",
        "eyeflow_instruction_duration_seconds",
        "eyeflow_executions_in_flight",
    ] {
        assert!(text.contains(metric), "{metric} missing from:\n{text}");
    }
    assert!(text.contains("program=\"order-check\""), "{text}");

    // Undeploy, revoke.
    let (status, body) = node.request(reqwest::Method::DELETE, "/api/programs/order-check", admin);
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = node.request(reqwest::Method::DELETE, "/api/programs/order-check", admin);
    assert_eq!(status, StatusCode::NOT_FOUND);
    let version = setup.plugin_version("valve-sim");
    let (status, body) = node.request(
        reqwest::Method::POST,
        &format!("/api/plugins/valve-sim/{version}/revoke"),
        admin,
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = node.get("/api/plugins", viewer);
    assert!(body["plugins"][0]["runnable"] == false, "{body}");
}

/// A rule that needs no plugin: returns `event.x + 1`.
const PLUS_ONE: &str = r#"
id: plus
version: 2.0.0
triggers:
  - kind: webhook
    source: numbers
instructions:
  - id: done
    op: RETURN
    expression: "{'y': event.x + 1}"
"#;

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.map(|e| e.expect("entry").path()) {
        if entry.is_dir() {
            found.extend(files_under(&entry));
        } else {
            found.push(entry);
        }
    }
    found
}

#[test]
fn program_ids_never_become_paths_and_a_version_names_one_content() {
    let setup = Setup::new();
    let node = Daemon::start(&setup, &[]);
    let admin = Some(node.admin.as_str());
    let viewer = Some(node.viewer.as_str());
    let programs = setup.dir().join("data/programs");
    let tag = format!("eyeflow-ids-{}", std::process::id());
    let before = files_under(setup.dir());

    // Ids the compiler refuses, built and signed by hand: 400 naming the field, no file.
    for id in [
        format!("../../{tag}"),
        format!("../../../../{tag}"),
        format!("/tmp/{tag}"),
        format!("plant/{tag}"),
    ] {
        let mut program = setup.draft(PLUS_ONE);
        program.program_id = id.clone();
        let (status, body) = node.post_bytes("/api/programs", &setup.sign(program), admin);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{id}: {body}");
        assert_eq!(error_code(&body), "invalid_program_id", "{body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains("\"program_id\""), "{message}");
    }
    let mut program = setup.draft(PLUS_ONE);
    program.version = "2.0.0+other".to_owned();
    let (status, body) = node.post_bytes("/api/programs", &setup.sign(program), admin);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "invalid_program_id", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("\"version\""), "{message}");
    let outside_data = |files: Vec<std::path::PathBuf>| -> Vec<std::path::PathBuf> {
        let data = setup.dir().join("data");
        files
            .into_iter()
            .filter(|f| !f.starts_with(&data))
            .collect()
    };
    assert_eq!(
        outside_data(files_under(setup.dir())),
        outside_data(before),
        "a refused deploy writes nothing outside the data directory"
    );
    assert!(files_under(&programs).is_empty(), "nor a program file");
    for outside in [
        setup.dir().join(format!("{tag}@2.0.0.bin")),
        std::path::PathBuf::from(format!("/tmp/{tag}@2.0.0.bin")),
    ] {
        assert!(!outside.exists(), "{} written", outside.display());
    }
    let (_, body) = node.get("/api/programs", viewer);
    assert_eq!(body["programs"], json!([]), "{body}");

    // Deployed under its digest, with the signer's key id; the same bytes again change
    // nothing.
    let first = setup.compile(PLUS_ONE);
    let digest = sha256_hex(&first);
    for _ in 0..2 {
        let (status, body) = node.post_bytes("/api/programs", &first, admin);
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["sha256"], digest.as_str(), "{body}");
        assert_eq!(body["key_id"], setup.key_id().as_str(), "{body}");
    }
    assert_eq!(
        files_under(&programs),
        vec![programs.join(format!("{digest}.bin"))]
    );

    // Other bytes under plus@2.0.0: 409 naming the deployed digest; the running code stays.
    let second = setup.compile(&PLUS_ONE.replace("event.x + 1", "event.x + 2"));
    let (status, body) = node.post_bytes("/api/programs", &second, admin);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "conflict");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains(&digest), "{message}");
    assert!(message.contains(&sha256_hex(&second)), "{message}");
    assert_eq!(files_under(&programs).len(), 1);
    let (status, body) = node.post_json("/api/events/numbers", &json!({"x": 7}), None, admin);
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let execution = body["routed"][0]["execution_id"]
        .as_str()
        .expect("execution");
    let view = node.wait_for(&format!("/api/executions/{execution}"), viewer, |v| {
        v["status"] == "completed"
    });
    assert_eq!(view["outcome"]["value"]["y"], 8, "{view}");

    // The list and the program show digest and key id.
    let (status, body) = node.get("/api/programs", viewer);
    assert_eq!(status, StatusCode::OK);
    let listed = &body["programs"][0];
    assert_eq!(listed["id"], "plus");
    assert_eq!(listed["sha256"], digest.as_str(), "{body}");
    assert_eq!(listed["key_id"], setup.key_id().as_str(), "{body}");
    let (status, body) = node.get("/api/programs/plus", viewer);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["versions"][0]["version"], "2.0.0", "{body}");
    assert_eq!(body["versions"][0]["sha256"], digest.as_str(), "{body}");
    assert_eq!(body["versions"][0]["key_id"], setup.key_id().as_str());
    assert_eq!(body["versions"][0]["active"], true);
    let (status, body) = node.get("/api/programs/nope", viewer);
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    // Undeploy removes the file deploy wrote; then the other bytes deploy.
    let (status, body) = node.request(reqwest::Method::DELETE, "/api/programs/plus", admin);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(files_under(&programs), Vec::<std::path::PathBuf>::new());
    let (status, body) = node.post_bytes("/api/programs", &second, admin);
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[test]
fn a_data_dir_of_the_earlier_layout_still_loads() {
    let setup = Setup::new();
    let bytes = setup.compile(PLUS_ONE);
    let digest = sha256_hex(&bytes);
    // Before digests, deploy wrote `programs/<id>@<version>.bin`.
    let programs = setup.dir().join("data/programs");
    std::fs::create_dir_all(&programs).expect("programs dir");
    std::fs::write(programs.join("plus@2.0.0.bin"), &bytes).expect("old file");
    let node = Daemon::start(&setup, &[]);
    let viewer = Some(node.viewer.as_str());
    let (status, body) = node.get("/api/programs/plus", viewer);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["versions"][0]["sha256"], digest.as_str(), "{body}");
    assert_eq!(
        files_under(&programs),
        vec![programs.join(format!("{digest}.bin"))],
        "renamed to its digest"
    );
    let (status, body) = node.post_json(
        "/api/events/numbers",
        &json!({"x": 1}),
        None,
        Some(&node.operator),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = node.request(
        reqwest::Method::DELETE,
        "/api/programs/plus",
        Some(&node.admin),
    );
    // An execution may still be running: undeploy waits for none.
    let (status, body) = if status == StatusCode::OK {
        (status, body)
    } else {
        node.wait_for("/api/executions/summary", viewer, |v| v["pending"] == 0);
        node.request(
            reqwest::Method::DELETE,
            "/api/programs/plus",
            Some(&node.admin),
        )
    };
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(files_under(&programs), Vec::<std::path::PathBuf>::new());
}

const ECHO_RULE: &str = r#"
id: echo
version: 1.0.0
triggers:
  - kind: webhook
    source: echo
instructions:
  - id: done
    op: RETURN
    expression: event.n
"#;

#[test]
fn extractor_refusals_are_json_with_a_code() {
    let setup = Setup::new();
    let node = Daemon::start(&setup, &[]);
    let viewer = Some(node.viewer.as_str());
    let admin = Some(node.admin.as_str());
    let operator = Some(node.operator.as_str());
    // Query strings actix's extractor refuses: once plain text, now JSON.
    for path in [
        "/api/audit?from=abc",
        "/api/audit?limit=-1",
        "/api/audit?from=1&from=2",
    ] {
        let (status, body) = node.get(path, viewer);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(error_code(&body), "bad_request", "{path}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("query")),
            "{path}: {body}"
        );
    }
    let (status, body) = node.request(
        reqwest::Method::DELETE,
        "/api/programs/x?version=1&version=2",
        admin,
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "bad_request");
    // A path segment that does not parse, an id that is not UTF-8.
    let (status, body) = node.request(
        reqwest::Method::POST,
        "/api/plugins/valve-sim/not-semver/revoke",
        admin,
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "bad_request");
    let (status, body) = node.get("/api/executions/%FF%FE", viewer);
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(error_code(&body), "not_found");
    // JSON bodies that do not parse or have the wrong shape.
    let (status, body) =
        node.post_raw_json("/api/executions/x/approvals/y", b"{not json", operator);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "bad_request");
    let (status, body) = node.post_raw_json("/api/events/echo", b"[1, 2", operator);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_code(&body), "bad_request");
}

#[test]
fn events_need_a_json_content_type() {
    let setup = Setup::new();
    let node = Daemon::start(&setup, &[]);
    let (admin, operator) = (Some(node.admin.as_str()), Some(node.operator.as_str()));
    let (status, body) = node.post_bytes("/api/programs", &setup.compile(ECHO_RULE), admin);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let event = br#"{"n": 7}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("application/json; charset=latin1"),
        Some("not a media type"),
        None,
    ] {
        let (status, body) = node.post_as("/api/events/echo", content_type, event, operator);
        assert_eq!(
            status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}: {body}"
        );
        assert_eq!(error_code(&body), "unsupported_media_type", "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("application/json")),
            "{body}"
        );
    }
    for content_type in [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON; charset=UTF-8",
    ] {
        let (status, body) = node.post_as("/api/events/echo", Some(content_type), event, operator);
        assert_eq!(status, StatusCode::ACCEPTED, "{content_type}: {body}");
        assert!(body["routed"][0]["execution_id"].is_string(), "{body}");
    }
}

#[test]
fn a_plugin_changes_publisher_only_through_an_audited_transfer() {
    let setup = Setup::new();
    let other = ed25519_dalek::SigningKey::from_bytes(&[43; 32]);
    eyeflow_ir::keys::write_keypair(&setup.dir().join("other"), &other).expect("key files");
    let out = eyeflow(
        &["keys", "trust", "other.pub", "--data-dir", "data"],
        setup.dir(),
    );
    assert!(out.status.success(), "keys trust: {}", stderr(&out));
    let (first, second) = (
        setup.key_id(),
        eyeflow_ir::keys::key_id(&other.verifying_key()),
    );
    let node = Daemon::start(&setup, &["max_upload_bytes = 400000"]);
    let admin = Some(node.admin.as_str());
    let grant_of = |version: &str| {
        let (_, body) = node.get("/api/plugins", admin);
        body["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .find(|p| p["plugin"] == format!("fixture-echo@{version}"))
            .map(|p| p["grant"].clone())
            .unwrap_or_else(|| panic!("fixture-echo@{version} not listed: {body}"))
    };

    let (status, body) = node.post_bytes(
        "/api/plugins?grant_secret=token",
        &setup.package("fixture-echo"),
        admin,
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = node.post_bytes(
        "/api/plugins",
        &setup.package_by("fixture-echo-v2", &other, None),
        admin,
    );
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "publisher_changed", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.contains(&first) && message.contains(&second),
        "{message}"
    );
    assert_eq!(grant_of("1.0.0")["secrets"], serde_json::json!(["token"]));

    let transfer = serde_json::json!({ "key_id": second });
    let path = "/api/plugins/fixture-echo/transfer";
    let (status, _) = node.post_json(path, &transfer, None, Some(&node.operator));
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = node.post_json("/api/plugins/nope/transfer", &transfer, None, admin);
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, body) = node.post_json(path, &transfer, None, admin);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        (body["from"].as_str(), body["to"].as_str()),
        (Some(first.as_str()), Some(second.as_str()))
    );
    assert_eq!(grant_of("1.0.0")["secrets"], serde_json::json!([]));

    let (status, body) = node.post_bytes(
        "/api/plugins",
        &setup.package_by("fixture-echo-v2", &other, None),
        admin,
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(grant_of("2.0.0")["secrets"], serde_json::json!([]));
    let (status, body) = node.post_bytes(
        "/api/plugins",
        &setup.package_by("fixture-echo-v2", setup.key(), Some("3.0.0")),
        admin,
    );
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(error_code(&body), "publisher_changed", "{body}");

    // Back to the first key from the client, through the API.
    let out = eyeflow(
        &[
            "plugin",
            "transfer",
            "fixture-echo",
            "--to-key",
            &first,
            "--node",
            node.url.as_str(),
            "--token",
            node.admin.as_str(),
        ],
        setup.dir(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, body) = node.post_bytes(
        "/api/plugins",
        &setup.package_by("fixture-echo-v2", setup.key(), Some("3.0.0")),
        admin,
    );
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (_, body) = node.get("/api/audit", admin);
    let transfers: Vec<&Value> = body["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["entry"]["opcode"] == "PLUGIN_TRANSFER")
        .collect();
    assert_eq!(transfers.len(), 2, "{body}");
    assert_eq!(transfers[0]["entry"]["instruction_id"], "fixture-echo");
    let (_, body) = node.get("/api/audit/verify", admin);
    assert_eq!(body["ok"], true, "{body}");
}

#[test]
fn the_openapi_document_matches_the_served_routes() {
    let setup = Setup::new();
    let node = Daemon::start(&setup, &[]);
    let (_, doc) = node.get("/openapi.json", None);
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 14, "{doc}");
    for (path, item) in paths {
        let concrete: String = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for (method, operation) in item.as_object().expect("path item") {
            let method =
                reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let (status, body) = node.request_any(method.clone(), &concrete, Some(&node.admin));
            assert_ne!(
                error_code(&body),
                "no_route",
                "{method} {path} is documented but not served"
            );
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            if operation.get("security").is_some() {
                let (status, _) = node.request_any(method.clone(), &concrete, None);
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path} without a token"
                );
            }
        }
    }
}

#[test]
fn client_commands_drive_a_running_node() {
    let setup = Setup::new();
    let node = Daemon::start(&setup, &[]);
    let remote = ["--node", node.url.as_str(), "--token", node.admin.as_str()];
    let package = setup.write("valve-sim.efp", &setup.package("valve-sim"));
    let mut args = vec!["plugin", "install", package.as_str()];
    args.extend(remote);
    let out = eyeflow(&args, setup.dir());
    assert!(out.status.success(), "{}", stderr(&out));
    let program = setup.write("order.bin", &setup.compile(ORDER_RULE));
    let mut args = vec!["deploy", program.as_str()];
    args.extend(remote);
    let out = eyeflow(&args, setup.dir());
    assert!(out.status.success(), "{}", stderr(&out));
    let mut args = vec![
        "events",
        "send",
        "orders",
        "--data",
        r#"{"qty": 4}"#,
        "--id",
        "cli-1",
    ];
    args.extend(remote);
    let out = eyeflow(&args, setup.dir());
    assert!(out.status.success(), "{}", stderr(&out));
    let sent: Value = serde_json::from_str(&stdout(&out)).expect("JSON answer");
    let execution = sent["routed"][0]["execution_id"]
        .as_str()
        .expect("execution")
        .to_owned();
    node.wait_for(
        &format!("/api/executions/{execution}"),
        Some(&node.viewer),
        |v| v["status"] == "awaiting_approval",
    );
    let mut args = vec!["approve", execution.as_str(), "open_valve"];
    args.extend(remote);
    let out = eyeflow(&args, setup.dir());
    assert!(out.status.success(), "{}", stderr(&out));
    node.wait_for(
        &format!("/api/executions/{execution}"),
        Some(&node.viewer),
        |v| v["status"] == "completed",
    );
    let mut args = vec!["executions", "show", execution.as_str()];
    args.extend(remote);
    let out = eyeflow(&args, setup.dir());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"doubled\": 8"), "{}", stdout(&out));
    // A refused program is exit code 4 with the node's reason.
    let garbage = setup.write("garbage.bin", b"not a program");
    let mut args = vec!["deploy", garbage.as_str()];
    args.extend(remote);
    let out = eyeflow(&args, setup.dir());
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("422"), "{}", stderr(&out));
    // A viewer token cannot deploy.
    let out = eyeflow(
        &[
            "deploy",
            program.as_str(),
            "--node",
            node.url.as_str(),
            "--token",
            node.viewer.as_str(),
        ],
        setup.dir(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("403 forbidden"), "{}", stderr(&out));
}

const BULK_RULE: &str = r#"
id: bulk
version: 1.0.0
requires:
  valve-sim: ^1.0
triggers:
  - kind: webhook
    source: bulk
instructions:
  - id: doubled
    op: EVAL
    expression: event.n * 2
    next: set_valve
  - id: set_valve
    op: CALL_ACTION
    capability: valve-sim
    action: set
    params:
      valve: "'valve/v-9'"
      position: "10"
    resource_key: valve/v-9
    next: done
  - id: done
    op: RETURN
    expression: "{'n': event.n}"
"#;

#[test]
fn sigterm_drains_and_loses_nothing() {
    let setup = Setup::new();
    let mut node = Daemon::start(&setup, &[]);
    let admin = Some(node.admin.as_str());
    let (status, body) = node.post_bytes("/api/plugins", &setup.package("valve-sim"), admin);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = node.post_bytes("/api/programs", &setup.compile(BULK_RULE), admin);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let sent = 300;
    let mut accepted = 0;
    for n in 0..sent {
        // A node that refuses work it could not start in time says so (503, send it again
        // later): a slow machine sees some of those, and the event is sent again.
        eyeflow_tests::eventually(
            &format!("event bulk-{n} accepted"),
            Duration::from_secs(60),
            || {
                let (status, body) = node.post_json(
                    "/api/events/bulk",
                    &json!({ "n": n }),
                    Some(&format!("bulk-{n}")),
                    Some(&node.operator),
                );
                assert!(
                    status == StatusCode::ACCEPTED || status == StatusCode::SERVICE_UNAVAILABLE,
                    "{status} {body}"
                );
                (status == StatusCode::ACCEPTED).then_some(())
            },
        );
        accepted += 1;
    }
    let status = node.sigterm();
    assert!(status.success(), "SIGTERM exit: {status:?}");
    // Every accepted event is journaled: finished, or pending and finished at the next start.
    let node = Daemon::start(&setup, &[]);
    let summary =
        eyeflow_tests::eventually("every execution finished", Duration::from_secs(60), || {
            let summary = node.journal_summary();
            (summary["finished"] == accepted && summary["pending"] == 0).then_some(summary)
        });
    assert_eq!(summary["executions"], accepted, "{summary}");
    let (_, verified) = node.get("/api/audit/verify", Some(&node.viewer));
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["signatures_checked"], true, "{verified}");
    assert!(verified["checkpoints"].as_u64() >= Some(1), "{verified}");
}

#[test]
fn expressions_nested_past_the_limit_are_refused_and_the_node_serves_on() {
    let setup = Setup::new();
    let node = Daemon::start(&setup, &[]);
    let admin = Some(node.admin.as_str());
    // 300 nested parentheses aborted the process on an HTTP worker before the limit.
    let deep = format!("{}event.x{}", "(".repeat(300), ")".repeat(300));
    let rule = PLUS_ONE.replace("{'y': event.x + 1}", &deep);
    let (status, body) = node.post_text("/api/rules/compile", &rule, admin);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(error_code(&body), "compile_error", "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("deeper than 16 levels"), "{message}");
    // Exponential in nested calls: refused at once, not after minutes.
    let calls = format!("{}event.x{}", "int(".repeat(40), ")".repeat(40));
    let (status, body) = node.post_text(
        "/api/rules/compile",
        &PLUS_ONE.replace("{'y': event.x + 1}", &calls),
        admin,
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // The same expression in a program signed by a trusted key is refused at deploy.
    let mut program = setup.draft(PLUS_ONE);
    program.instructions[0].expression = deep;
    let (status, body) = node.post_bytes("/api/programs", &setup.sign(program), admin);
    assert!(status.is_client_error(), "{status} {body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains("deeper than 16 levels"), "{message}");
    let (status, _) = node.get("/healthz", None);
    assert_eq!(status, StatusCode::OK, "the node serves on");
}

#[cfg(unix)]
#[test]
fn the_data_dir_is_private_to_the_node_user() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new();
    let data = setup.dir().join("data");
    // What an earlier version (or an operator) left readable is tightened at start.
    std::fs::write(
        data.join("secrets.json"),
        r#"{"kv/api": "api-token-value"}"#,
    )
    .unwrap();
    for path in [data.clone(), data.join("secrets.json")] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut node = Daemon::start(&setup, &[]);
    let admin = Some(node.admin.as_str());
    let (status, body) = node.post_bytes("/api/plugins", &setup.package("valve-sim"), admin);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = node.post_bytes("/api/programs", &setup.compile(BULK_RULE), admin);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for n in 0..20 {
        let (status, body) = node.post_json(
            "/api/events/bulk",
            &json!({ "n": n }),
            Some(&format!("bulk-{n}")),
            Some(&node.operator),
        );
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    eyeflow_tests::eventually("20 executions finished", Duration::from_secs(60), || {
        (node.journal_summary()["finished"] == 20).then_some(())
    });
    assert!(node.sigterm().success());
    let mut stack = vec![data];
    let (mut dirs, mut files) = (0, 0);
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            assert_eq!(mode, 0o700, "{}", path.display());
            dirs += 1;
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_eq!(mode, 0o600, "{}", path.display());
            files += 1;
        }
    }
    // The store, the programs and the keys were all walked.
    assert!(dirs >= 3 && files >= 5, "{dirs} directories, {files} files");
}

#[test]
fn keys_are_trusted_and_revoked_on_a_running_node_at_once_and_audited() {
    let setup = Setup::new();
    let node = Daemon::start(&setup, &[]);
    let (admin, operator) = (Some(node.admin.as_str()), Some(node.operator.as_str()));
    let publisher = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
    let (_, public) =
        eyeflow_ir::keys::write_keypair(&setup.dir().join("publisher"), &publisher).unwrap();
    let key_id = eyeflow_ir::keys::key_id(&publisher.verifying_key());
    let sign = |program: &mut eyeflow_ir::pb::LlmIrProgram| {
        eyeflow_ir::keys::sign(program, &publisher);
        eyeflow_ir::encode(program)
    };

    // Not trusted yet: its program is refused.
    let mut plus = setup.draft(PLUS_ONE);
    let (status, _) = node.post_bytes("/api/programs", &sign(&mut plus), admin);
    assert!(status.is_client_error(), "{status}");
    // A secret key file is refused as a key to trust, naming the mix-up.
    let secret = std::fs::read_to_string(setup.dir().join("publisher.key")).unwrap();
    let (status, body) = node.post_text("/api/keys", &secret, admin);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("secret key"),
        "{body}"
    );
    // Operators may not trust keys; admins may, while the node runs.
    let text = std::fs::read_to_string(&public).unwrap();
    let (status, _) = node.post_text("/api/keys", &text, operator);
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = node.post_text("/api/keys", &text, admin);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["key_id"], key_id.as_str());
    let (status, body) = node.post_bytes("/api/programs", &sign(&mut plus), admin);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = node.post_json("/api/events/numbers", &json!({"x": 1}), None, operator);
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // Revoked: at once, its deployed program takes no new event and its new programs are
    // refused.
    let (status, body) = node.request(
        reqwest::Method::DELETE,
        &format!("/api/keys/{key_id}"),
        admin,
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = node.post_json("/api/events/numbers", &json!({"x": 2}), None, operator);
    assert_eq!(status, StatusCode::NOT_FOUND, "no listener is left: {body}");
    let mut newer = setup.draft(&PLUS_ONE.replace("2.0.0", "2.0.1"));
    let (status, body) = node.post_bytes("/api/programs", &sign(&mut newer), admin);
    assert!(status.is_client_error(), "{status} {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked"),
        "{body}"
    );
    let (_, body) = node.get("/api/keys", admin);
    assert!(
        body["keys"]
            .as_array()
            .is_some_and(|keys| keys.contains(&json!({"key_id": key_id, "revoked": true}))),
        "{body}"
    );
    let (status, _) = node.request(reqwest::Method::DELETE, "/api/keys/0000000000000000", admin);
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The same from the CLI against the running node (no data-dir lock in the way).
    let second = ed25519_dalek::SigningKey::from_bytes(&[78; 32]);
    eyeflow_ir::keys::write_keypair(&setup.dir().join("second"), &second).unwrap();
    let second_id = eyeflow_ir::keys::key_id(&second.verifying_key());
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_eyeflow"))
            .args(args)
            .args(["--node", &node.url, "--token", &node.admin])
            .current_dir(setup.dir())
            .output()
            .expect("eyeflow runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    cli(&["keys", "trust", "second.pub"]);
    cli(&["keys", "revoke", &second_id]);
    let (_, body) = node.get("/api/keys", admin);
    assert!(
        body["keys"]
            .as_array()
            .is_some_and(|keys| keys.contains(&json!({"key_id": second_id, "revoked": true}))),
        "{body}"
    );

    // Every operator action is in the chain, which verifies.
    let (_, audit) = node.get("/api/audit?limit=1000", admin);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["entry"]["instruction_id"] == key_id.as_str())
                .filter_map(|e| e["entry"]["opcode"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(actions, ["KEY_TRUST", "KEY_REVOKE"], "{audit}");
    let (status, body) = node.get("/api/audit/verify", admin);
    assert_eq!(status, StatusCode::OK, "{body}");
}
