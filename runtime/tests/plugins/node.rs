//! A node running programs whose plugins misbehave: the execution takes its fallback and
//! the node serves on.

use eyeflow_actors::ports::ExecutionOutcome;
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

#[test]
fn a_trapping_or_runaway_plugin_falls_back_and_the_node_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::embedded(dir.path());
    config.workers = 2;
    let node = Node::start(config).unwrap();
    let key = key(1);
    node.trust(&key.verifying_key()).unwrap();
    node.plugins()
        .install(&signed("fixture-hostile", &key))
        .unwrap();
    let options = CompileOptions {
        source_name: "hostile.yaml".into(),
        compiled_by: "test".into(),
        compiled_at: 0,
    };
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
    let failed = &steps[0];
    assert_eq!(
        failed.fallback.as_deref(),
        Some("fallback_value"),
        "{failed:?}"
    );
    assert!(
        matches!(&failed.outcome, eyeflow_actors::ports::StepOutcome::Failed { class, .. } if class == "internal"),
        "{failed:?}"
    );
}
