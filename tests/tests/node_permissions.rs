//! Signed permissions on a real node: a program whose instruction needs a permission its
//! signed flags do not carry is refused at deploy, naming it.

use eyeflow_tests::node::Workdir;

const ACTS: &str = r#"
id: acts
version: 1.0.0
requires: {valve-sim: ^1.0}
triggers:
  - {kind: webhook, source: acts}
instructions:
  - {id: open, op: CALL_ACTION, capability: valve-sim, action: open, params: {valve: "'V-101'"}}
"#;

#[test]
fn a_program_without_the_permission_its_action_needs_is_refused_at_deploy() {
    let work = Workdir::new("");
    let (node, url) = work.start();
    work.install(&url, "valve-sim", &[]);
    let options = eyeflow_compiler::CompileOptions {
        source_name: "acts.yaml".to_owned(),
        compiled_by: "tests".to_owned(),
        compiled_at: 1_700_000_000,
    };
    let mut program = eyeflow_compiler::compile(ACTS, &options).expect("compiles");
    assert!(
        program.instructions[0]
            .permissions
            .is_some_and(|p| p.can_actuate),
        "the compiler grants what the action needs"
    );
    program.instructions[0].permissions = None;
    eyeflow_ir::keys::sign(&mut program, &work.key);
    let response = reqwest::blocking::Client::new()
        .post(format!("{url}/api/programs"))
        .bearer_auth(&work.admin)
        .body(eyeflow_ir::encode(&program))
        .send()
        .expect("deploy");
    assert_eq!(response.status().as_u16(), 422);
    let body: serde_json::Value =
        serde_json::from_str(&response.text().expect("body")).expect("json");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("can_actuate")),
        "{body}"
    );
    // Signed with what it needs, it deploys.
    work.deploy(&url, ACTS);
    work.stop(node);
}
