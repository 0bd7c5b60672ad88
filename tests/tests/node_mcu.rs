//! An MCU-profile program on a real `eyeflow node`: deployed like any signed program, it
//! runs from its bytecode (numbers are one `f64` type, so `85 / 2` is 42.5, where the
//! server profile's CEL divides integers; whole results leave as JSON integers), and its
//! action reaches the real valve-sim plugin with the values the bytecode computed.

use std::time::Duration;

use eyeflow_ir::pb::Target;
use eyeflow_tests::eventually;
use eyeflow_tests::node::Workdir;
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(60);

/// A device rule: half the level; past 40, the valve goes to what exceeds it.
const TANK_RULE: &str = r#"
id: tank-guard
version: 1.0.0
requires:
  valve-sim: ^1.0
triggers:
  - {kind: webhook, source: tank}
instructions:
  - {id: half, op: EVAL, expression: "event.level / 2", next: check}
  - {id: check, op: BRANCH, condition: "half > 40", then: close, else: done}
  - id: close
    op: CALL_ACTION
    capability: valve-sim
    action: set
    params:
      valve: "'valve/v-101'"
      position: "half - 40"
    next: done
  - {id: done, op: RETURN, expression: "half"}
"#;

/// The finished execution `id` (its JSON view), once it has an outcome.
fn finished(work: &Workdir, url: &str, id: &str) -> Value {
    eventually("the execution finishes", PATIENCE, || {
        let view = work.execution(url, id)?;
        (view["status"] != "running" && view["status"] != "pending").then_some(view)
    })
}

/// The input the action of instruction `instruction` was started with, in execution view
/// `view` (its `started` step).
fn action_input<'a>(view: &'a Value, instruction: &str) -> Option<&'a Value> {
    view["steps"]
        .as_array()?
        .iter()
        .find(|s| s["instruction_id"] == instruction && s["outcome"]["status"] == "started")
        .map(|s| &s["outcome"]["input"]["params"])
}

#[test]
fn an_mcu_program_runs_on_a_node_from_its_bytecode() {
    let work = Workdir::new("");
    let (node, url) = work.start();
    work.install(&url, "valve-sim", &[]);
    work.deploy_for(&url, TANK_RULE, Target::Mcu);

    let high = work
        .send(&url, "tank", "high", &json!({"level": 90}))
        .expect("accepted");
    let view = finished(&work, &url, &high);
    assert_eq!(view["status"], "completed", "{view}");
    assert_eq!(view["outcome"]["value"], json!(45), "{view}");
    let close = action_input(&view, "close").expect("the valve step ran");
    assert_eq!(close["position"], json!(5), "{view}");
    assert_eq!(close["valve"], "valve/v-101", "{view}");

    // The bytecode's division: 42.5, not CEL's integer 42; the valve (whose position is
    // an integer) refuses the 2.5 the bytecode computed, as it would on a device.
    let odd = work
        .send(&url, "tank", "odd", &json!({"level": 85}))
        .expect("accepted");
    let view = finished(&work, &url, &odd);
    assert_eq!(view["status"], "failed", "{view}");
    assert_eq!(view["outcome"]["class"], "invalid_input", "{view}");
    let close = action_input(&view, "close").expect("the valve step started");
    assert_eq!(close["position"], json!(2.5), "{view}");

    let low = work
        .send(&url, "tank", "low", &json!({"level": 7}))
        .expect("accepted");
    let view = finished(&work, &url, &low);
    assert_eq!(view["outcome"]["value"], json!(3.5), "{view}");
    assert!(action_input(&view, "close").is_none(), "{view}");

    // An event the bytecode cannot compute on fails as invalid input, with no action.
    let bad = work
        .send(&url, "tank", "bad", &json!({"level": "full"}))
        .expect("accepted");
    let view = finished(&work, &url, &bad);
    assert_eq!(view["status"], "failed", "{view}");
    assert!(action_input(&view, "close").is_none(), "{view}");
    work.stop(node);
}
