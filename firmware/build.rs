//! Generates the micropb decoder of the LLM-IR from proto/proto/llm_ir.proto, with the
//! device's fixed capacities. Only what the firmware reads of an MCU-profile program is
//! generated: strings, ids and bytecode are read in place from the verified file
//! (src/wire.rs), so the decoded structs hold scalars and short JSON literals only.
use std::path::PathBuf;

use micropb_gen::{Config, Generator};

const PROTO: &str = "../proto/proto/llm_ir.proto";

/// JSON of a FALLBACK_VALUE or a LOAD default: a string of up to `MAX_STR` bytes fits,
/// quoted, with every byte escaped by a backslash (`\"`, `\\`, `\n`); one with many
/// control characters written `\u00XX` may not, and is refused as over capacity (the
/// decoder's buffers are on the stack of whoever decodes an instruction).
const JSON_BYTES: usize = 2 + 2 * eyeflow_mcu::limits::MAX_STR;

/// Error classes listed by a fallback's `on_errors` or a retry's `retry_on`: each of the
/// twelve once, with room for a repeat.
const CLASSES: usize = 16;

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path().expect("protoc-bin-vendored has protoc");
    set_protoc(&protoc);
    let mut g = Generator::new();
    g.use_container_heapless();
    g.comments_to_docs(false);
    g.calculate_max_size(false);
    g.encode_decode(micropb_gen::EncodeDecode::DecodeOnly);
    let skip = |g: &mut Generator, paths: &[&str]| {
        for p in paths {
            g.configure(&format!(".eyeflow.ir.v1.{p}"), Config::new().skip(true));
        }
    };
    // The header: the signature payload is computed from the raw file; these are read in
    // place or not needed on a device.
    skip(
        &mut g,
        &[
            "LlmIRProgram.program_id",
            "LlmIRProgram.compiled_at",
            "LlmIRProgram.ir_version",
            "LlmIRProgram.name",
            "LlmIRProgram.version",
            "LlmIRProgram.compiled_by",
            "LlmIRProgram.signature",
            "LlmIRProgram.instructions",
            "LlmIRProgram.metadata",
            "LlmIRProgram.signing_key_id",
            "LlmIRProgram.required_capabilities",
            "LlmIRProgram.triggers",
        ],
    );
    // Instructions: ids, names and bytecode are read in place; the CEL sources and what
    // the MCU profile never sets are skipped (their presence is refused from the raw
    // fields, see src/program.rs).
    skip(
        &mut g,
        &[
            "IRInstruction.instruction_id",
            "IRInstruction.comment",
            "IRInstruction.dispatch_metadata",
            "IRInstruction.depends_on",
            "IRInstruction.branch_condition",
            "IRInstruction.branch_true_id",
            "IRInstruction.branch_false_id",
            "IRInstruction.resource_key",
            "IRInstruction.time_window",
            "IRInstruction.postcondition",
            "IRInstruction.compensation_ids",
            "IRInstruction.expression",
            "IRInstruction.params",
            "IRInstruction.output_var",
            "IRInstruction.http",
            "IRInstruction.emit",
            "IRInstruction.mcu",
            "LoopConfig.body",
            "LoopConfig.items_expr",
            "LoopConfig.item_var",
            "LoopConfig.while_condition",
            "MemoryAccess.key",
            "FallbackConfig.alternative_model",
        ],
    );
    g.configure(
        ".eyeflow.ir.v1",
        Config::new()
            .max_len(CLASSES as u32)
            .max_bytes(JSON_BYTES as u32),
    );
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    g.add_protoc_arg("--proto_path=../proto/proto");
    g.compile_protos(&[PROTO], out.join("llm_ir.rs"))
        .expect("llm_ir.proto compiles");
    println!("cargo:rerun-if-changed={PROTO}");
}

/// Points micropb-gen, which runs `$PROTOC`, at the vendored protoc.
#[allow(unsafe_code)]
fn set_protoc(protoc: &std::path::Path) {
    // SAFETY: the build script has no other threads that could read the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
}
