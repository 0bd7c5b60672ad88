//! Generates the prost types from `proto/llm_ir.proto` with the vendored `protoc`
//! (no system protoc needed). Enum and bytes fields get serde helpers so that
//! `eyeflow ir decode --pretty` prints names and hex instead of raw numbers.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Sorted maps: the canonical encoding must not depend on hash order.
    config.btree_map(["."]);
    config.type_attribute(".", "#[derive(serde::Serialize)]");
    let enum_fields = [
        ("EventTrigger.kind", "trigger_kind"),
        ("IRInstruction.opcode", "opcode"),
        ("FallbackConfig.strategy", "fallback_strategy"),
        ("FallbackConfig.on_errors", "error_classes"),
        ("RetryConfig.retry_on", "error_classes"),
        ("TimeoutConfig.on_timeout", "fallback_strategy"),
        ("MemoryAccess.scope", "memory_scope"),
        ("LlmIRProgram.target", "target"),
    ];
    for (field, helper) in enum_fields {
        config.field_attribute(
            format!(".eyeflow.ir.v1.{field}"),
            format!("#[serde(serialize_with = \"crate::json::{helper}\")]"),
        );
    }
    for field in [
        "LlmIRProgram.signature",
        "McuCode.expression",
        "McuCode.branch_condition",
        "McuCode.while_condition",
        "McuParam.code",
    ] {
        config.field_attribute(
            format!(".eyeflow.ir.v1.{field}"),
            "#[serde(serialize_with = \"crate::json::hex_bytes\")]",
        );
    }
    println!("cargo:rerun-if-changed=proto/llm_ir.proto");
    config.compile_protos(&["proto/llm_ir.proto"], &["proto"])?;
    Ok(())
}
