//! A node running programs whose plugins misbehave: the execution takes its fallback and
//! the node serves on.

use eyeflow_actors::ports::{ExecutionOutcome, Fallback};
use eyeflow_compiler::CompileOptions;
use eyeflow_runtime::node::{Node, NodeConfig};
use serde_json::json;

use crate::support::{key, signed};

const RULE: &str = r#"
id: hostile-guard
version: 1.0.0
requires: {fixture-hostile: ^1}
instructions:
  - id: act
    op: CALL_ACTION
    capability: fixture-hostile
    action: WHAT
    timeout_ms: 300
    fallback: {strategy: value, value: '{"recovered": true}'}
    next: done
  - {id: done, op: RETURN, expression: act}
"#;

fn outcome(node: &Node, execution_id: &str) -> ExecutionOutcome {
    let (_, _, outcome) = node
        .journal()
        .execution(execution_id)
        .expect("journal readable")
        .expect("journaled");
    outcome.expect("finished")
}

/// A node on `dir` trusting `key(1)`, with the hostile fixture installed.
fn hostile_node(dir: &std::path::Path) -> (Node, ed25519_dalek::SigningKey) {
    let mut config = NodeConfig::embedded(dir);
    config.workers = 2;
    let node = Node::start(config).expect("node starts");
    let key = key(1);
    node.trust(&key.verifying_key()).expect("trust");
    node.plugins()
        .install(&signed("fixture-hostile", &key))
        .expect("install");
    (node, key)
}

fn options() -> CompileOptions {
    CompileOptions {
        source_name: "rule.yaml".into(),
        compiled_by: "test".into(),
        compiled_at: 0,
    }
}

#[test]
fn a_trapping_or_runaway_plugin_falls_back_and_the_node_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let (node, key) = hostile_node(dir.path());
    let options = options();
    let mut executions = Vec::new();
    for (i, action) in ["trap", "spin", "ok"].into_iter().enumerate() {
        let source = RULE
            .replace("WHAT", action)
            .replace("1.0.0", &format!("1.0.{i}"));
        let program = eyeflow_compiler::compile_and_sign(&source, &options, &key).unwrap();
        node.deploy(&eyeflow_ir::encode(&program)).unwrap();
        match node
            .submit("hostile-guard", &format!("ev-{action}"), "test", json!({}))
            .unwrap()
        {
            eyeflow_actors::ports::Accepted::New { execution_id } => executions.push(execution_id),
            other => panic!("{other:?}"),
        }
        node.wait_idle();
    }
    let recovered = ExecutionOutcome::Completed {
        value: json!({"recovered": true}),
    };
    assert_eq!(
        outcome(&node, &executions[0]),
        recovered,
        "a trap takes the fallback"
    );
    assert_eq!(
        outcome(&node, &executions[1]),
        recovered,
        "a runaway loop stops at its timeout"
    );
    assert_eq!(
        outcome(&node, &executions[2]),
        ExecutionOutcome::Completed {
            value: json!({"ok": true})
        }
    );
    let (_, steps, _) = node.journal().execution(&executions[0]).unwrap().unwrap();
    assert!(
        matches!(
            &steps[0].outcome,
            eyeflow_actors::ports::StepOutcome::Started { .. }
        ),
        "the intent first: {:?}",
        steps[0]
    );
    let failed = &steps[1];
    assert_eq!(
        failed.fallback.map(Fallback::as_str),
        Some("fallback_value"),
        "{failed:?}"
    );
    assert!(
        matches!(&failed.outcome, eyeflow_actors::ports::StepOutcome::Failed { class, .. } if class == "internal"),
        "{failed:?}"
    );
}

#[test]
fn the_llm_triage_rule_calls_a_chat_completions_endpoint_and_keeps_the_secret_out() {
    let server = crate::support::HttpServer::start(vec![(
        "/v1/chat/completions",
        200,
        r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"{\"severity\":\"critical\",\"summary\":\"Chiller 2 tripped.\"}"}}]}"#,
    )]);
    let dir = tempfile::tempdir().unwrap();
    let guideline = "GUIDELINE-SECRET-7731";
    std::fs::write(
        dir.path().join("secrets.json"),
        format!(r#"{{"kv/plant-a/triage-guidelines": "{guideline}", "kv/plant-a/pager-token": "pager-secret"}}"#),
    )
    .unwrap();
    let mut config = NodeConfig::embedded(dir.path());
    config.llm = Some(eyeflow_runtime::node::LlmEndpoint {
        base_url: server.url("/v1"),
        api_key_secret: None,
    });
    config.http_allow = Some(Vec::new());
    let node = Node::start(config).unwrap();
    let key = key(1);
    node.trust(&key.verifying_key()).unwrap();
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules/llm-triage.yaml"),
    )
    .unwrap();
    let program = eyeflow_compiler::compile_and_sign(&source, &options(), &key).unwrap();
    node.deploy(&eyeflow_ir::encode(&program)).unwrap();
    let accepted = node
        .submit(
            "llm-triage",
            "alarm-1",
            "test",
            json!({"alarm": "CH-2 compressor trip"}),
        )
        .unwrap();
    node.wait_idle();
    let eyeflow_actors::ports::Accepted::New { execution_id } = accepted else {
        panic!("{accepted:?}")
    };
    // The pager host is not allowed: the CALL_SERVICE is skipped by its fallback.
    assert_eq!(
        outcome(&node, &execution_id),
        ExecutionOutcome::Completed {
            value: json!({"severity": "critical", "paged": true})
        }
    );

    let received = server.received.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let request: serde_json::Value = serde_json::from_str(&received[0].body).unwrap();
    assert_eq!(request["model"], "llama-3.1-8b-instruct");
    let messages = request["messages"].as_array().unwrap();
    assert!(
        messages[0]["content"].as_str().unwrap().contains(guideline),
        "the vault slot fills the prompt"
    );
    assert!(
        messages.len() >= 6,
        "system, two few-shot pairs, the alarm: {messages:?}"
    );
    assert!(
        messages.last().unwrap()["content"]
            .as_str()
            .unwrap()
            .contains("CH-2 compressor trip")
    );

    // The secret reached the provider only: not the journal, not the audit chain.
    let (_, steps, _) = node.journal().execution(&execution_id).unwrap().unwrap();
    assert!(!serde_json::to_string(&steps).unwrap().contains(guideline));
    for (_, value) in node
        .store()
        .scan(eyeflow_runtime::store::Space::Audit, b"")
        .unwrap()
    {
        assert!(!String::from_utf8_lossy(&value).contains(guideline));
    }
}

#[test]
fn deploy_refuses_missing_capabilities_and_unsigned_or_tampered_programs() {
    let dir = tempfile::tempdir().unwrap();
    let (node, key) = hostile_node(dir.path());
    let options = options();
    let wants = |req: &str| {
        RULE.replace("WHAT", "ok")
            .replace("fixture-hostile: ^1", &format!("fixture-hostile: '{req}'"))
    };

    let program = eyeflow_compiler::compile_and_sign(&wants("^9"), &options, &key).unwrap();
    let err = node
        .deploy(&eyeflow_ir::encode(&program))
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs capability fixture-hostile@^9"), "{err}");

    let draft = eyeflow_compiler::compile(&wants("^1"), &options).unwrap();
    let err = node
        .deploy(&eyeflow_ir::encode(&draft))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unsigned"), "{err}");

    let program = eyeflow_compiler::compile_and_sign(&wants("^1"), &options, &key).unwrap();
    let mut bytes = eyeflow_ir::encode(&program);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    assert!(
        node.deploy(&bytes).is_err(),
        "a tampered program is refused"
    );
    assert!(node.programs().is_empty(), "nothing refused was deployed");

    // The node serves on: the good program deploys and runs.
    node.deploy(&eyeflow_ir::encode(&program)).unwrap();
    assert_eq!(node.programs().len(), 1);
    node.submit("hostile-guard", "after-refusals", "test", json!({}))
        .unwrap();
    node.wait_idle();
    assert_eq!(
        node.stats()["hostile-guard"].outcomes.get("completed"),
        Some(&1)
    );
}

#[test]
fn an_effect_a_crash_left_in_doubt_waits_for_an_operator_whose_approval_reissues_it() {
    use eyeflow_actors::ports::{EventRecord, Journal, StepOutcome, StepRecord};
    let dir = tempfile::tempdir().unwrap();
    let (node, key) = hostile_node(dir.path());
    let program =
        eyeflow_compiler::compile_and_sign(&RULE.replace("WHAT", "ok"), &options(), &key).unwrap();
    node.deploy(&eyeflow_ir::encode(&program)).unwrap();
    // What a node killed during the action leaves: the event and the action's intent,
    // durable; no result. (fixture-hostile declares nothing for a resume.)
    let event = EventRecord {
        event_id: "ev-doubt".into(),
        source: "test".into(),
        program_id: "hostile-guard".into(),
        program_version: "1.0.0".into(),
        payload: json!({}),
        priority: 128,
        accepted_at_ms: 0,
    };
    let journal = node.journal();
    let execution = match journal.accept(&event).unwrap() {
        eyeflow_actors::ports::Accepted::New { execution_id } => execution_id,
        other => panic!("{other:?}"),
    };
    let key_of_act = format!("{execution}/act/1");
    let intent = StepRecord {
        execution_id: execution.clone(),
        seq: 0,
        instruction_id: "act".into(),
        attempt: 1,
        outcome: StepOutcome::Started {
            idempotency_key: key_of_act.clone(),
            input: json!({"action": "ok", "params": {}}),
        },
        fallback: None,
        started_ms: 0,
        finished_ms: 0,
    };
    eyeflow_tests::wait(journal.steps(&[intent], &[], true)).unwrap();
    node.shutdown().unwrap();
    drop(node);

    let mut config = NodeConfig::embedded(dir.path());
    config.workers = 2;
    let node = Node::start(config).expect("node restarts");
    node.wait_idle();
    let (_, steps, ended) = node.journal().execution(&execution).unwrap().unwrap();
    assert!(ended.is_none(), "it waits, it does not re-run the action");
    assert_eq!(
        steps.last().map(|s| &s.outcome),
        Some(&StepOutcome::Ambiguous {
            idempotency_key: key_of_act
        })
    );
    let audit = node.audit().of_execution(&execution).unwrap();
    assert_eq!(
        audit.last().map(|e| e.entry.outcome.as_str()),
        Some("ambiguous")
    );
    // The operator checked the device: issue it again under the same key.
    node.decide(&execution, "act", true).unwrap();
    node.wait_idle();
    assert_eq!(
        outcome(&node, &execution),
        ExecutionOutcome::Completed {
            value: json!({"ok": true})
        }
    );
    let (_, steps, _) = node.journal().execution(&execution).unwrap().unwrap();
    let done = steps
        .iter()
        .find(|s| matches!(s.outcome, StepOutcome::Done { .. }));
    assert_eq!(
        done.map(|s| (s.attempt, s.fallback.map(Fallback::as_str))),
        Some((1, Some("reissued")))
    );
    assert!(
        node.decide(&execution, "act", true).is_err(),
        "no second decision"
    );
}
