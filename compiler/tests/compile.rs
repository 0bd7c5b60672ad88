//! Integration tests of the rule compiler: the example rules compile, sign and load; the
//! output is deterministic; broken rules fail with the right message at the right line.

use std::collections::BTreeSet;
use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use eyeflow_compiler::{CompileOptions, Error, compile, compile_and_sign};
use eyeflow_ir::pb::{IrOpcode, LlmIrProgram};
use eyeflow_ir::{Keyring, Limits};

fn options(name: &str) -> CompileOptions {
    CompileOptions {
        source_name: name.to_owned(),
        compiled_by: "tests@eyeflow".to_owned(),
        compiled_at: 1_767_225_600,
    }
}

fn examples() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/rules");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/rules exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read_to_string(&p).expect("readable rule"))
        })
        .collect()
}

fn compile_ok(name: &str, source: &str) -> LlmIrProgram {
    compile(source, &options(name)).unwrap_or_else(|e| panic!("{name} does not compile: {e}"))
}

fn instruction<'a>(program: &'a LlmIrProgram, id: &str) -> &'a eyeflow_ir::pb::IrInstruction {
    program
        .instructions
        .iter()
        .find(|i| i.instruction_id == id)
        .unwrap_or_else(|| panic!("no instruction {id}"))
}

mod examples {
    use super::*;

    #[test]
    fn there_are_the_six_required_examples() {
        let names: BTreeSet<String> = examples().into_iter().map(|(n, _)| n).collect();
        for required in [
            "valve-guard.yaml",
            "llm-triage.yaml",
            "sensor-sweep.yaml",
            "parallel-checks.yaml",
            "data-sync.yaml",
            "alert-notify.yaml",
        ] {
            assert!(names.contains(required), "missing {required}");
        }
    }

    #[test]
    fn each_compiles_validates_signs_and_loads() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut keyring = Keyring::new();
        let key_id = keyring.trust(key.verifying_key());
        for (name, source) in examples() {
            let draft = compile_ok(&name, &source);
            eyeflow_ir::validate(&draft).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(draft.signature.is_empty(), "{name}: a draft is unsigned");

            let signed = compile_and_sign(&source, &options(&name), &key)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let bytes = eyeflow_ir::encode(&signed);
            let loaded = eyeflow_ir::load(&bytes, &keyring, &Limits::default())
                .unwrap_or_else(|e| panic!("{name} refused by load: {e}"));
            assert_eq!(loaded.key_id, key_id);
            assert_eq!(
                loaded
                    .program
                    .metadata
                    .as_ref()
                    .map(|m| m.source_name.as_str()),
                Some(name.as_str())
            );
        }
    }

    #[test]
    fn together_they_use_all_fourteen_opcodes() {
        let mut used = BTreeSet::new();
        for (name, source) in examples() {
            for ins in compile_ok(&name, &source).instructions {
                used.insert(ins.opcode);
            }
        }
        let all: BTreeSet<i32> = (1..=14).collect();
        let missing: Vec<&str> = all
            .difference(&used)
            .filter_map(|v| IrOpcode::try_from(*v).ok())
            .map(|op| op.as_str_name())
            .collect();
        assert!(
            missing.is_empty(),
            "opcodes not used by any example: {missing:?}"
        );
    }

    #[test]
    fn compiling_twice_gives_identical_bytes() {
        let key = SigningKey::from_bytes(&[9; 32]);
        for (name, source) in examples() {
            let a = eyeflow_ir::encode(&compile_ok(&name, &source));
            let b = eyeflow_ir::encode(&compile_ok(&name, &source));
            assert_eq!(a, b, "{name}: drafts differ");
            let a = compile_and_sign(&source, &options(&name), &key).expect("signs");
            let b = compile_and_sign(&source, &options(&name), &key).expect("signs");
            assert_eq!(
                eyeflow_ir::encode(&a),
                eyeflow_ir::encode(&b),
                "{name}: signed differ"
            );
        }
    }

    #[test]
    fn valve_guard_carries_its_physical_safeguards() {
        let (name, source) = examples()
            .into_iter()
            .find(|(n, _)| n == "valve-guard.yaml")
            .expect("valve-guard");
        let program = compile_ok(&name, &source);
        assert_eq!(program.default_priority.map(|p| p.priority_level), Some(64));
        let throttle = instruction(&program, "throttle_valve");
        assert_eq!(throttle.resource_key, "valve/v-101");
        let window = throttle.time_window.as_ref().expect("time window");
        assert_eq!((window.start_minute, window.end_minute), (360, 1320));
        assert_eq!(window.weekdays, vec![1, 2, 3, 4, 5, 6]);
        let post = throttle.postcondition.as_ref().expect("postcondition");
        assert_eq!(post.read_capability_id, "valve-sim");
        assert_eq!(post.read_capability_version, "^1.0");
        assert_eq!(throttle.retry.as_ref().map(|r| r.max_retries), Some(3));
        assert_eq!(
            throttle.fallback.as_ref().map(|f| f.strategy),
            Some(eyeflow_ir::pb::FallbackStrategy::Abort as i32)
        );
        assert_eq!(
            throttle.compensation_ids,
            vec!["restore_valve", "tell_operators"]
        );
        let policy = throttle.priority_policy.expect("overridden wait");
        assert_eq!((policy.priority_level, policy.max_wait_ms), (64, 1500));
        assert_eq!(
            instruction(&program, "restore_valve")
                .priority_policy
                .map(|p| p.priority_level),
            Some(0)
        );
        assert!(throttle.permissions.is_some_and(|p| p.can_actuate));
        // A BRANCH target is reached through the branch, not through depends_on.
        assert!(throttle.depends_on.is_empty());
        assert_eq!(
            instruction(&program, "read_position").depends_on,
            vec!["read_pressure"]
        );
    }

    #[test]
    fn llm_triage_freezes_its_context() {
        let (name, source) = examples()
            .into_iter()
            .find(|(n, _)| n == "llm-triage.yaml")
            .expect("llm-triage");
        let program = compile_ok(&name, &source);
        let classify = instruction(&program, "classify");
        let d = classify.dispatch_metadata.as_ref().expect("dispatch");
        assert_eq!(d.model, "llama-3.1-8b-instruct");
        assert_eq!(d.few_shot_examples.len(), 2);
        assert_eq!(
            d.few_shot_examples[1].output_json,
            r#"{"severity":"minor","summary":"AHU-4 filter needs replacing."}"#
        );
        let slots: Vec<(&str, &str)> = d
            .dynamic_slots
            .iter()
            .map(|s| (s.slot_id.as_str(), s.source_type.as_str()))
            .collect();
        assert_eq!(slots, vec![("alarm", "runtime"), ("guidelines", "vault")]);
        assert_eq!(d.output_format, "json");
        assert!(d.output_schema.starts_with('{'));
        assert_eq!(
            classify
                .fallback
                .as_ref()
                .map(|f| f.alternative_model.as_str()),
            Some("llama-3.2-3b-instruct")
        );
        assert!(
            classify
                .permissions
                .is_some_and(|p| p.can_read_secrets && p.can_call_external)
        );
    }

    #[test]
    fn loop_and_parallel_structure() {
        let all = examples();
        let find = |wanted: &str| {
            let (name, source) = all.iter().find(|(n, _)| n == wanted).expect("example");
            compile_ok(name, source)
        };
        let sweep = find("sensor-sweep.yaml");
        let config = instruction(&sweep, "sweep")
            .r#loop
            .clone()
            .expect("loop config");
        assert_eq!(config.max_iterations, 8);
        assert_eq!(config.item_var, "boiler");
        assert_eq!(instruction(&sweep, "done").depends_on, vec!["sweep"]);

        let checks = find("parallel-checks.yaml");
        let joined = instruction(&checks, "joined");
        assert_eq!(
            joined.depends_on,
            vec!["boiler_supply", "chiller_return", "weather"]
        );
        assert!(instruction(&checks, "weather").is_parallel);
        assert!(!instruction(&checks, "assess").is_parallel);
        let mut ranks: Vec<i32> = checks
            .instructions
            .iter()
            .map(|i| i.sequence_number)
            .collect();
        ranks.sort_unstable();
        assert_eq!(
            ranks,
            (0..checks.instructions.len() as i32).collect::<Vec<_>>()
        );
    }
}

/// A small valid rule the broken cases start from (line numbers matter: see each case).
const BASE: &str = "\
id: base
version: 1.0.0
requires:
  valve-sim: ^1.0
instructions:
  - id: close
    op: CALL_ACTION
    capability: valve-sim
    action: close
    resource_key: valve/V-1
    next: done
  - id: done
    op: RETURN
";

mod broken {
    use super::*;

    fn fails(source: &str, fragment: &str, line: usize) -> Error {
        let err = match compile(source, &options("rules/broken.yaml")) {
            Ok(_) => panic!("compiled, expected an error containing {fragment:?}:\n{source}"),
            Err(e) => e,
        };
        let text = err.to_string();
        assert!(text.contains(fragment), "{text:?} lacks {fragment:?}");
        assert_eq!(err.position().line, line, "{text}");
        assert!(
            text.starts_with(&format!("rules/broken.yaml:{line}:")),
            "{text:?} does not start with FILE:LINE:"
        );
        assert!(
            text.contains("; expected"),
            "{text:?} does not say what was expected"
        );
        err
    }

    #[test]
    fn expressions_nested_past_the_limit() {
        let deep = format!("{}event.x{}", "(".repeat(300), ")".repeat(300));
        let source = format!(
            "id: deep\nversion: 1.0.0\ninstructions:\n  - id: done\n    op: RETURN\n    expression: \"{deep}\"\n"
        );
        fails(&source, "nests brackets deeper than 16 levels", 6);
        let calls = format!("{}1{}", "int(".repeat(40), ")".repeat(40));
        let source = format!(
            "id: calls\nversion: 1.0.0\ninstructions:\n  - id: done\n    op: RETURN\n    expression: \"{calls}\"\n"
        );
        fails(&source, "deeper than 16 levels", 6);
    }

    #[test]
    fn base_compiles() {
        compile_ok("base.yaml", BASE);
    }

    #[test]
    fn yaml_syntax_error() {
        let source = BASE.replace("    next: done", "    next: [done");
        let err = fails(&source, "YAML syntax error", 12);
        assert!(matches!(err, Error::Syntax { .. }));
    }

    #[test]
    fn duplicate_yaml_key() {
        let source = BASE.replace(
            "    action: close\n",
            "    action: close\n    action: open\n",
        );
        fails(&source, "duplicate key `action` (first at line 9)", 10);
    }

    #[test]
    fn unknown_top_level_field_lists_allowed_fields() {
        let source = BASE.replace("version: 1.0.0\n", "version: 1.0.0\nprioritty: high\n");
        let err = fails(&source, "unknown field `prioritty`", 3);
        assert!(
            err.to_string()
                .contains("expected one of: id, name, version"),
            "{err}"
        );
    }

    #[test]
    fn unknown_instruction_field() {
        let source = BASE.replace("    capability: valve-sim", "    capabilty: valve-sim");
        fails(&source, "unknown field `capabilty` in `instructions[0]`", 8);
    }

    #[test]
    fn wrong_type() {
        let source = BASE.replace(
            "    resource_key: valve/V-1\n",
            "    resource_key: valve/V-1\n    timeout_ms: soon\n",
        );
        let err = fails(&source, "is not a whole number", 11);
        assert!(matches!(err, Error::Schema { .. }));
    }

    #[test]
    fn missing_required_field() {
        let source = BASE.replace("version: 1.0.0\n", "");
        fails(&source, "lacks the required field `version`", 1);
    }

    #[test]
    fn unknown_opcode() {
        let source = BASE.replace("op: CALL_ACTION", "op: CALL_ACTON");
        fails(
            &source,
            "unknown opcode `CALL_ACTON`; expected one of: LOAD_RESOURCE",
            7,
        );
    }

    #[test]
    fn field_that_does_not_apply_to_the_opcode() {
        let source = BASE.replace("    op: RETURN\n", "    op: RETURN\n    then: close\n");
        fails(
            &source,
            "field `then` does not apply to RETURN instruction `done`",
            14,
        );
    }

    #[test]
    fn unknown_reference() {
        let source = BASE.replace("    next: done", "    next: finish");
        fails(
            &source,
            "`next` names instruction `finish`, which does not exist",
            11,
        );
    }

    #[test]
    fn duplicate_instruction_id() {
        let source = BASE.replace("  - id: done", "  - id: close");
        fails(
            &source,
            "duplicate instruction id `close` (first at line 6)",
            12,
        );
    }

    #[test]
    fn cel_parse_error_points_into_the_expression() {
        let source = BASE.replace(
            "    op: RETURN\n",
            "    op: RETURN\n    expression: close.ok &&& true\n",
        );
        let err = fails(&source, "RETURN `done` return value is not valid CEL", 14);
        assert!(matches!(err, Error::Expression { .. }));
        assert!(err.position().column > 17, "{err}");
    }

    #[test]
    fn cel_that_crashes_the_parser_is_a_compile_error() {
        let source = BASE.replace(
            "    op: RETURN\n",
            "    op: RETURN\n    expression: \"close.ok && )\"\n",
        );
        fails(&source, "RETURN `done` return value is not valid CEL", 14);
    }

    #[test]
    fn load_resource_that_names_nothing_to_read() {
        let source = BASE.replace(
            "  - id: done\n",
            "  - id: read\n    op: LOAD_RESOURCE\n    capability: valve-sim\n    next: done\n  - id: done\n",
        )
        .replace("    next: done\n  - id: read", "    next: read\n  - id: read");
        fails(&source, "LOAD_RESOURCE `read` names nothing to read", 12);
        for says_what in [
            "    params: {key: \"'valve/V-1'\"}\n",
            "    resource_key: valve/V-1\n",
            "    params: {valve: \"'V-1'\"}\n",
        ] {
            let source = source.replace(
                "    capability: valve-sim\n    next: done\n",
                &format!("    capability: valve-sim\n{says_what}    next: done\n"),
            );
            compile(&source, &options("rules/read.yaml"))
                .unwrap_or_else(|e| panic!("{says_what}: {e}"));
        }
    }

    /// Broken CEL of every kind is a compile error at the expression, never a panic (not
    /// even a message from the panic hook: the CEL parser's panics are caught quietly).
    #[test]
    fn broken_cel_is_a_compile_error_never_a_panic() {
        let deep = format!("{}a", "(".repeat(10_000));
        let huge = format!("a + {}", "1 + ".repeat(256 * 1024));
        for broken in [
            "a >",
            "((",
            "\"unterminated",
            "a.b.",
            "1 +* 2",
            ")",
            "close.ok && )",
            "[1, 2",
            "{'k': }",
            "a ? b",
            deep.as_str(),
            huge.as_str(),
        ] {
            let yaml = serde_json::to_string(broken).expect("a YAML string");
            let source = BASE.replace(
                "    op: RETURN\n",
                &format!("    op: RETURN\n    expression: {yaml}\n"),
            );
            let err = fails(&source, "RETURN `done` return value", 14);
            assert!(matches!(err, Error::Expression { .. }), "{err}");
        }
    }

    #[test]
    fn cel_error_in_a_block_scalar_points_at_its_line() {
        let source = BASE.replace(
            "    op: RETURN\n",
            "    op: RETURN\n    expression: |\n      close.ok &&\n        )( true\n",
        );
        let err = fails(&source, "extraneous input ')'", 16);
        assert_eq!(err.position().column, 9, "{err}");
    }

    #[test]
    fn wrong_type_nested_in_an_instruction() {
        let source = BASE.replace(
            "    action: close\n",
            "    action: close\n    comment: {a: 1}\n",
        );
        fails(
            &source,
            "`instructions[0].comment`: invalid type: map; expected a string",
            10,
        );
    }

    #[test]
    fn loop_without_max_iterations() {
        let source = "\
id: sweep
version: 1.0.0
instructions:
  - id: repeat
    op: LOOP
    body: [tick]
    next: done
  - id: tick
    op: EVAL
    expression: 'true'
  - id: done
    op: RETURN
";
        fails(
            source,
            "unbounded loop: LOOP `repeat` has no `max_iterations`",
            4,
        );
        let zero = source.replace(
            "    body: [tick]\n",
            "    body: [tick]\n    max_iterations: 0\n",
        );
        fails(
            &zero,
            "unbounded loop: LOOP `repeat` has max_iterations 0",
            7,
        );
        let huge = source.replace(
            "    body: [tick]\n",
            "    body: [tick]\n    max_iterations: 1000000\n",
        );
        fails(&huge, "expected a bound between 1 and 10000", 7);
    }

    #[test]
    fn capability_not_declared() {
        let source = BASE.replace("  valve-sim: ^1.0\n", "  sensor-sim: ^1.0\n");
        fails(
            &source,
            "capability `valve-sim` used by `close` is not declared in `requires`",
            8,
        );
    }

    #[test]
    fn program_ids_that_are_paths() {
        for (id, fragment) in [
            ("\"../../x\"", "has the character '/'"),
            ("/tmp/x", "has the character '/'"),
            ("plant/valve", "has the character '/'"),
            ("..x", "does not start with a letter or a digit"),
            ("a..b", "contains \"..\""),
            ("Valve", "has the character 'V'"),
            ("\"\"", "rule id is empty"),
        ] {
            let source = BASE.replace("id: base\n", &format!("id: {id}\n"));
            let err = fails(&source, fragment, 1);
            assert_eq!(err.position().column, 5, "{err}");
            assert!(err.to_string().contains("rule id"), "{err}");
        }
        let long = BASE.replace("id: base\n", &format!("id: {}\n", "a".repeat(64)));
        fails(&long, "is 64 bytes long", 1);
        compile_ok(
            "ok.yaml",
            &BASE.replace("id: base\n", &format!("id: {}\n", "a".repeat(63))),
        );
        compile_ok(
            "ok.yaml",
            &BASE.replace("id: base\n", "id: plant-a.valve_2\n"),
        );
    }

    #[test]
    fn versions_are_strict_semver() {
        for (version, fragment) in [
            ("1.0", "is not semver"),
            ("v1.0.0", "is not semver"),
            ("01.0.0", "is not semver"),
            ("1.0.0+build.5", "has build metadata"),
        ] {
            let source = BASE.replace("version: 1.0.0\n", &format!("version: {version}\n"));
            let err = fails(&source, fragment, 2);
            assert_eq!(err.position().column, 10, "{err}");
        }
        compile_ok(
            "ok.yaml",
            &BASE.replace("version: 1.0.0\n", "version: 1.1.0-rc.1\n"),
        );
    }

    #[test]
    fn bad_semver_requirement() {
        let source = BASE.replace("valve-sim: ^1.0", "valve-sim: version one");
        fails(
            &source,
            "has version requirement `version one` that is not semver",
            4,
        );
    }

    #[test]
    fn unknown_priority() {
        let source = BASE.replace(
            "    action: close\n",
            "    action: close\n    priority: urgent\n",
        );
        fails(
            &source,
            "unknown priority `urgent`; expected one of: critical, high, normal, low, background",
            10,
        );
    }

    #[test]
    fn non_positive_timeout() {
        let source = BASE.replace(
            "    action: close\n",
            "    action: close\n    timeout_ms: 0\n",
        );
        fails(
            &source,
            "timeout_ms of `close` is 0; expected a positive number",
            10,
        );
    }

    #[test]
    fn unreachable_instruction() {
        let source = format!("{BASE}  - id: orphan\n    op: RETURN\n");
        fails(
            &source,
            "instruction `orphan` is unreachable from the entry `close`",
            14,
        );
    }

    #[test]
    fn cycle_outside_a_loop() {
        let source = BASE.replace(
            "    op: RETURN\n",
            "    op: EVAL\n    expression: 'true'\n    next: close\n",
        );
        fails(
            &source,
            "cycle close -> done -> close; expected repetition to be written as a LOOP",
            15,
        );
    }

    #[test]
    fn parallel_actions_on_one_resource() {
        let source = "\
id: two-hands
version: 1.0.0
requires:
  valve-sim: ^1.0
instructions:
  - id: start
    op: EVAL
    expression: event.target
    next: [close_a, close_b]
  - id: close_a
    op: CALL_ACTION
    capability: valve-sim
    action: close
    resource_key: valve/V-1
    next: joined
  - id: close_b
    op: CALL_ACTION
    capability: valve-sim
    action: set
    resource_key: valve/V-1
    next: joined
  - id: joined
    op: MERGE
";
        fails(
            source,
            "`close_a` and `close_b` both act on resource `valve/V-1` in parallel branches",
            20,
        );
        // Either instruction, or the whole rule, may hand the conflict to the arbiter.
        let per_instruction = source.replace(
            "    action: set\n",
            "    action: set\n    arbitrate: true\n",
        );
        let program = compile_ok("arbitrated.yaml", &per_instruction);
        let b = instruction(&program, "close_b");
        assert_eq!(b.resource_key, "valve/V-1");
        assert!(b.is_parallel);
        let whole_rule = source.replace("version: 1.0.0\n", "version: 1.0.0\narbitrate: true\n");
        compile_ok("arbitrated.yaml", &whole_rule);
        // Sequential actions on one resource are fine, and so are opposite BRANCH arms.
        let sequential = source
            .replace("    next: [close_a, close_b]", "    next: close_a")
            .replace(
                "    resource_key: valve/V-1\n    next: joined\n  - id: close_b",
                "    resource_key: valve/V-1\n    next: close_b\n  - id: close_b",
            )
            .replace("    next: joined\n  - id: joined\n    op: MERGE\n", "");
        compile_ok("sequential.yaml", &sequential);
        let exclusive = source
            .replace(
                "    op: EVAL\n    expression: event.target\n    next: [close_a, close_b]",
                "    op: BRANCH\n    condition: event.urgent\n    then: close_a\n    else: close_b",
            )
            .replace(
                "  - id: joined\n    op: MERGE\n",
                "  - id: joined\n    op: RETURN\n",
            );
        compile_ok("exclusive.yaml", &exclusive);
    }

    #[test]
    fn fallback_model_without_model() {
        let source = "\
id: ask
version: 1.0.0
instructions:
  - id: ask
    op: LLM_CALL
    model: small
    prompt: Say hello
    fallback:
      strategy: model
";
        fails(source, "FALLBACK_MODEL of `ask` has no fallback model", 9);
    }

    #[test]
    fn llm_call_without_prompt() {
        let source = "\
id: ask
version: 1.0.0
instructions:
  - id: ask
    op: LLM_CALL
    model: small
";
        fails(
            source,
            "LLM_CALL instruction `ask` has no `prompt`; expected a prompt template",
            4,
        );
    }

    #[test]
    fn output_schema_must_be_an_object() {
        let source = "\
id: ask
version: 1.0.0
instructions:
  - id: ask
    op: LLM_CALL
    model: small
    prompt: Say hello
    output_schema: '[\"type\", \"object\"]'
";
        fails(source, "output_schema of `ask` is not a JSON object", 8);
    }

    #[test]
    fn malformed_few_shot_example() {
        let source = "\
id: ask
version: 1.0.0
instructions:
  - id: ask
    op: LLM_CALL
    model: small
    prompt: Classify {{alarm}}
    slots:
      alarm: {runtime: event.alarm}
    output_schema: '{\"type\": \"object\", \"required\": [\"severity\"]}'
    examples:
      - input: '{\"alarm\": \"pump trip\"}'
        output: '{\"severity\": \"critical\"}'
      - input: '{\"alarm\": \"filter dirty\"}'
        output: 'minor'
";
        fails(
            source,
            "output of few-shot example 2 of `ask` is not valid JSON",
            15,
        );
        let missing = source.replace("'minor'", "'{\"level\": \"minor\"}'");
        fails(
            &missing,
            "lacks `severity`, required by the output_schema",
            15,
        );
    }

    #[test]
    fn undeclared_prompt_slot() {
        let source = "\
id: ask
version: 1.0.0
instructions:
  - id: ask
    op: LLM_CALL
    model: small
    prompt: Classify {{alarm}} for {{site}}
    slots:
      alarm: {runtime: event.alarm}
";
        fails(source, "uses `{{site}}`, which is not a declared slot", 7);
    }

    #[test]
    fn merge_needs_two_inputs() {
        let source = BASE.replace("    op: RETURN\n", "    op: MERGE\n");
        fails(&source, "MERGE `done` joins 1 instruction(s)", 12);
    }

    #[test]
    fn not_a_mapping() {
        fails("- just\n- a list\n", "the rule is not a YAML mapping", 1);
    }

    #[test]
    fn errors_are_send_sync_and_static() {
        fn assert_bounds<E: std::error::Error + Send + Sync + 'static>() {}
        assert_bounds::<Error>();
    }
}

/// What `cargo fuzz run compile` (compiler/fuzz) checks, on a fixed budget in every test
/// run: mutated example rules — bytes changed, deleted, brackets inserted — are compiled or
/// refused, never a panic, a stack overflow or a hang.
#[test]
fn mutated_rules_are_refused_or_compiled_never_a_crash() {
    let mut rng = eyeflow_ir::testing::Xorshift::new(0x9e37_79b9_7f4a_7c15);
    for (name, source) in examples() {
        for _ in 0..150 {
            let mut bytes = source.clone().into_bytes();
            for _ in 0..=rng.below(4) {
                let at = rng.below(bytes.len());
                match rng.below(4) {
                    0 => bytes[at] = b"(){}[]:'\"-!|&?\n 9x"[rng.below(18)],
                    1 => {
                        bytes.remove(at);
                    }
                    2 => bytes
                        .splice(at..at, std::iter::repeat_n(b'(', 40))
                        .for_each(drop),
                    _ => bytes
                        .splice(at..at, std::iter::repeat_n(b'[', 40))
                        .for_each(drop),
                }
            }
            if let Ok(text) = String::from_utf8(bytes) {
                let _ = compile(&text, &options(&name));
            }
        }
    }
}

/// `--target mcu`: the MCU profile's refusals, each at its line with what to do instead,
/// and what an accepted program carries.
mod mcu {
    use eyeflow_compiler::{Target, compile_for};
    use eyeflow_ir::pb::Target as IrTarget;

    use super::*;

    /// A rule with `body` as its instructions (indented by four spaces), requiring
    /// capability `valve` (line 4 is the first line of `body`... after the header below).
    fn rule(body: &str) -> String {
        format!("id: device\nversion: 1.0.0\nrequires:\n  valve: ^1.0\ninstructions:\n{body}")
    }

    fn refused(body: &str, fragment: &str, line: usize) {
        let source = rule(body);
        let err = match compile_for(&source, &options("dev.yaml"), Target::Mcu) {
            Ok(_) => panic!("compiled for mcu, expected {fragment:?}:\n{source}"),
            Err(e) => e,
        };
        let text = err.to_string();
        assert!(text.contains(fragment), "{text:?} lacks {fragment:?}");
        assert!(
            text.starts_with(&format!("dev.yaml:{line}:")),
            "{text:?} is not at line {line}"
        );
        // The same rule compiles for a server: the refusal is the profile's.
        if !fragment.contains("not valid CEL") {
            compile(&source, &options("dev.yaml"))
                .unwrap_or_else(|e| panic!("server refuses it too: {e}"));
        }
    }

    #[test]
    fn accepted_programs_carry_bytecode_beside_their_cel() {
        let source = rule(
            "  - id: level\n    op: EVAL\n    expression: \"event.level * 2.0 + 1\"\n    next: check\n  - id: check\n    op: BRANCH\n    condition: \"level > 10 && event.mode == 'auto'\"\n    then: open\n    else: done\n  - id: open\n    op: CALL_ACTION\n    capability: valve\n    action: open\n    params:\n      percent: \"level\"\n      valve: \"'v1'\"\n    next: done\n  - id: done\n    op: RETURN\n    expression: \"level\"\n",
        );
        let program = compile_for(&source, &options("dev.yaml"), Target::Mcu).unwrap();
        assert_eq!(program.target, IrTarget::Mcu as i32);
        let open = instruction(&program, "open");
        let code = open.mcu.as_ref().expect("bytecode");
        let names: Vec<&str> = code.params.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["percent", "valve"]);
        assert!(code.params.iter().all(|p| !p.code.is_empty()));
        let check = instruction(&program, "check");
        assert_eq!(check.branch_condition, "level > 10 && event.mode == 'auto'");
        assert!(!check.mcu.as_ref().unwrap().branch_condition.is_empty());
        eyeflow_ir::validate(&program).unwrap();
        // The same rule for a server carries no bytecode.
        let server = compile(&source, &options("dev.yaml")).unwrap();
        assert_eq!(server.target, IrTarget::Server as i32);
        assert!(server.instructions.iter().all(|i| i.mcu.is_none()));
    }

    #[test]
    fn llm_calls_and_events_carry_their_slots_and_key_as_bytecode() {
        let source = rule(
            "  - id: ask\n    op: LLM_CALL\n    model: tiny\n    prompt: \"Level {{level}}\"\n    slots:\n      level: {runtime: event.level}\n    output_schema: '{\"type\": \"string\"}'\n    next: tell\n  - id: tell\n    op: EMIT_EVENT\n    topic: tank.alerts\n    event_key: event.site\n    params:\n      answer: ask\n",
        );
        let program = compile_for(&source, &options("dev.yaml"), Target::Mcu).unwrap();
        let ask = instruction(&program, "ask").mcu.as_ref().expect("bytecode");
        let slots: Vec<&str> = ask.slots.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(slots, ["level"]);
        assert!(!ask.slots[0].code.is_empty());
        let tell = instruction(&program, "tell")
            .mcu
            .as_ref()
            .expect("bytecode");
        assert!(!tell.event_key.is_empty());
        assert_eq!(tell.params[0].name, "answer");
        eyeflow_ir::validate(&program).unwrap();
    }

    #[test]
    fn an_event_has_one_payload() {
        let source = rule(
            "  - id: tell\n    op: EMIT_EVENT\n    topic: alerts\n    expression: \"1\"\n    params:\n      a: \"1\"\n",
        );
        let err = compile(&source, &options("dev.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("both `expression` and `params`"), "{err}");
        assert!(err.starts_with("dev.yaml:9:"), "{err}");
    }

    #[test]
    fn opcodes_outside_the_profile() {
        refused(
            "  - id: fn\n    op: CALL_FUNCTION\n    function: clamp\n    params:\n      value: \"1\"\n      min: \"0\"\n      max: \"2\"\n",
            "CALL_FUNCTION is not in the MCU profile",
            7,
        );
        refused(
            "  - id: tell\n    op: EMIT_EVENT\n    topic: alerts\n    expression: \"1\"\n",
            "give them as `params` instead of an expression",
            9,
        );
        refused(
            "  - id: ask\n    op: LLM_CALL\n    model: tiny\n    prompt: \"{{g}}\"\n    slots:\n      g: {vault: kv/guidelines}\n",
            "a device holds no secrets",
            11,
        );
        refused(
            "  - id: api\n    op: CALL_API\n    http:\n      url: https://example.com/x\n",
            "CALL_API is not in the MCU profile",
            7,
        );
    }

    #[test]
    fn fields_outside_the_profile() {
        refused(
            "  - id: each\n    op: LOOP\n    over: \"event.items\"\n    max_iterations: 3\n    body: [step]\n  - id: step\n    op: EVAL\n    expression: \"1\"\n",
            "write a `while` loop",
            8,
        );
        refused(
            "  - id: keep\n    op: STORE\n    scope: node\n    key: k\n    expression: \"1\"\n",
            "use `scope: execution`",
            8,
        );
        refused(
            "  - id: act\n    op: CALL_ACTION\n    capability: valve\n    action: open\n    resource_key: valve-1\n",
            "drop resource_key",
            10,
        );
        refused(
            "  - id: act\n    op: CALL_ACTION\n    capability: valve\n    action: open\n    fallback:\n      strategy: value\n      value: '{\"a\": 1}'\n",
            "a list or an object",
            12,
        );
    }

    #[test]
    fn every_other_field_outside_the_profile() {
        let chain = |n: usize, each: &dyn Fn(usize) -> String| -> String {
            (0..n)
                .map(|i| format!("{}    next: s{}\n", each(i), i + 1))
                .chain(std::iter::once(format!("  - id: s{n}\n    op: RETURN\n")))
                .collect()
        };
        let cases: Vec<(String, &str, usize)> = vec![
            (
                "  - id: a\n    op: EVAL\n    expression: \"1\"\n    next: [b, c]\n  - id: b\n    op: EVAL\n    expression: \"2\"\n  - id: c\n    op: EVAL\n    expression: \"3\"\n".into(),
                "chain the parallel steps",
                10,
            ),
            (
                "  - id: act\n    op: CALL_ACTION\n    capability: valve\n    action: open\n    postcondition:\n      condition: \"resource.open\"\n      capability: valve\n      deadline_ms: 100\n".into(),
                "read the value back with LOAD_RESOURCE",
                11,
            ),
            (
                "  - id: act\n    op: CALL_ACTION\n    capability: valve\n    action: open\n    time_window:\n      start: \"06:00\"\n      end: \"22:00\"\n".into(),
                "a device has no calendar",
                11,
            ),
            (
                "  - id: act\n    op: CALL_ACTION\n    capability: valve\n    action: open\n    requires_human_validation: true\n".into(),
                "cannot wait for a human decision",
                10,
            ),
            (
                "  - id: read\n    op: LOAD_RESOURCE\n    capability: valve\n    params:\n      key: \"'k'\"\n    secret: kv/x\n".into(),
                "a device holds no secrets",
                11,
            ),
            (
                "  - id: read\n    op: LOAD_RESOURCE\n    capability: valve\n    params:\n      key: \"'k'\"\n    output_schema: '{\"type\": \"number\"}'\n".into(),
                "JSON schemas are not checked on a device",
                11,
            ),
            (
                "  - id: spin\n    op: LOOP\n    max_iterations: 3\n    body: [step]\n  - id: step\n    op: EVAL\n    expression: \"1\"\n".into(),
                "needs a `while` condition",
                6,
            ),
            (
                "  - id: back\n    op: LOAD\n    scope: execution\n    key: k\n    default: '{\"a\": 1}'\n".into(),
                "a list or an object",
                10,
            ),
            (
                format!(
                    "  - id: done\n    op: RETURN\n    expression: \"event.{}\"\n",
                    "a".repeat(50)
                ),
                "above the device's 48",
                8,
            ),
            (
                "  - id: act\n    op: CALL_ACTION\n    capability: valve\n    action: open\n    params:\n      a: \"1\"\n      b: \"1\"\n      c: \"1\"\n      d: \"1\"\n      e: \"1\"\n".into(),
                "5 params, above the device's 4",
                6,
            ),
            (
                chain(9, &|i| {
                    format!(
                        "  - id: s{i}\n    op: STORE\n    scope: execution\n    key: k{i}\n    expression: \"1\"\n"
                    )
                }),
                "9 execution-memory keys, above the device's 8",
                6,
            ),
            (
                chain(30, &|i| {
                    format!(
                        "  - id: s{i}\n    op: EVAL\n    comment: {}\n    expression: \"1\"\n",
                        "c".repeat(300)
                    )
                }),
                "above the device's 8192",
                1,
            ),
            (
                "  - id: act\n    op: CALL_ACTION\n    capability: valve\n    action: an_action_name_longer_than_the_limit\n".into(),
                "above the device's 32",
                9,
            ),
        ];
        for (body, fragment, line) in cases {
            refused(&body, fragment, line);
        }
        let filtered = "id: device\nversion: 1.0.0\ntriggers:\n  - kind: webhook\n    source: s\n    filter: \"event.a > 1\"\ninstructions:\n  - id: done\n    op: RETURN\n";
        let err = compile_for(filtered, &options("dev.yaml"), Target::Mcu).unwrap_err();
        assert!(err.to_string().starts_with("dev.yaml:4:"), "{err}");
        assert!(
            err.to_string()
                .contains("filter in the program with a BRANCH"),
            "{err}"
        );
    }

    #[test]
    fn capacities() {
        refused(
            "  - id: spin\n    op: LOOP\n    while: \"true\"\n    max_iterations: 65\n    body: [step]\n  - id: step\n    op: EVAL\n    expression: \"1\"\n",
            "above the device's 64",
            9,
        );
        let long = "x".repeat(40);
        refused(
            &format!("  - id: {long}\n    op: RETURN\n    expression: \"1\"\n"),
            "beyond the device's capacity",
            6,
        );
        refused(
            &format!("  - id: done\n    op: RETURN\n    expression: \"'{long}'\"\n"),
            "above the device's 32",
            8,
        );
        let many: String = (0..33)
            .map(|i| {
                format!(
                    "  - id: s{i}\n    op: EVAL\n    expression: \"1\"\n    next: s{}\n",
                    i + 1
                )
            })
            .chain(std::iter::once("  - id: s33\n    op: RETURN\n".to_owned()))
            .collect();
        refused(&many, "34 instructions, above the device's 32", 6);
    }

    #[test]
    fn expressions_outside_the_profile() {
        for (expression, fragment) in [
            ("size(event.items)", "the function `size`"),
            ("event.items[0]", "indexing"),
            ("event.n % 2", "the operator `%`"),
            ("'a' in event.tags", "the operator `in`"),
            ("[1, 2]", "lists are not in the MCU profile"),
            ("{'a': 1}", "maps are not in the MCU profile"),
            ("has(event.x)", "the macro `has`"),
            ("event.items.all(i, i > 0)", "macros"),
            ("event.name.startsWith('a')", "the method `startsWith`"),
            ("9007199254740993", "beyond ±2^53"),
            ("memory.k", "`memory` is not a variable"),
            ("b'x'", "bytes literals"),
        ] {
            refused(
                &format!("  - id: done\n    op: RETURN\n    expression: \"{expression}\"\n"),
                fragment,
                8,
            );
        }
    }

    #[test]
    fn programs_too_large_in_bytecode() {
        let sum = vec!["event.a"; 30].join(" + ");
        refused(
            &format!("  - id: done\n    op: RETURN\n    expression: \"{sum}\"\n"),
            "bytecode",
            8,
        );
    }
}
