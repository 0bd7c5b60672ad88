//! Prost types generated from `proto/llm_ir.proto` by `build.rs` (generated code only).
#![allow(missing_docs, unreachable_pub, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/eyeflow.ir.v1.rs"));
