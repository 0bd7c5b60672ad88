//! The IR-version compatibility matrix: which LLM-IR format versions this runtime runs.
//!
//! | IR  | runtime 1.x | 2.x | 3.x |
//! |-----|-----|-----|-----|
//! | 1.0 | yes | yes | yes |
//! | 1.5 | yes | yes | yes |
//! | 2.0 | no  | yes | yes |
//! | 2.5 | no  | yes | yes |
//! | 3.0 | no  | no  | yes |
//!
//! An IR version absent from the table is refused: a runtime cannot know what a format it
//! has never seen means.

use crate::{Error, Result};

/// Runtime (SVM) version `(major, minor)` of this build.
pub const RUNTIME_VERSION: (u32, u32) = (2, 0);

/// IR version written by this build's compiler.
pub const IR_VERSION: &str = "2.0";

/// Known IR versions and the minimum runtime major version each needs.
pub const COMPATIBILITY: &[(&str, u32)] =
    &[("1.0", 1), ("1.5", 1), ("2.0", 2), ("2.5", 2), ("3.0", 3)];

/// Checks that IR `ir_version` runs on a runtime of major version `runtime_major`.
pub fn check_compatible(ir_version: &str, runtime_major: u32) -> Result<()> {
    let Some(&(_, required)) = COMPATIBILITY.iter().find(|(v, _)| *v == ir_version) else {
        return Err(Error::UnknownIrVersion {
            ir_version: ir_version.to_owned(),
            known: COMPATIBILITY
                .iter()
                .map(|(v, _)| *v)
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    if runtime_major >= required {
        Ok(())
    } else {
        Err(Error::IncompatibleIrVersion {
            ir_version: ir_version.to_owned(),
            required,
            runtime: format!("{runtime_major}.x"),
        })
    }
}

/// Checks `ir_version` against this build's [`RUNTIME_VERSION`].
pub fn check_runtime_compatible(ir_version: &str) -> Result<()> {
    check_compatible(ir_version, RUNTIME_VERSION.0).map_err(|e| match e {
        Error::IncompatibleIrVersion {
            ir_version,
            required,
            ..
        } => Error::IncompatibleIrVersion {
            ir_version,
            required,
            runtime: format!("{}.{}", RUNTIME_VERSION.0, RUNTIME_VERSION.1),
        },
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's matrix, row by row: (IR, runs on 1.x, 2.x, 3.x).
    const MATRIX: &[(&str, [bool; 3])] = &[
        ("1.0", [true, true, true]),
        ("1.5", [true, true, true]),
        ("2.0", [false, true, true]),
        ("2.5", [false, true, true]),
        ("3.0", [false, false, true]),
    ];

    #[test]
    fn matrix_row_by_row() {
        for (ir, row) in MATRIX {
            for (i, expected) in row.iter().enumerate() {
                let runtime = i as u32 + 1;
                assert_eq!(
                    check_compatible(ir, runtime).is_ok(),
                    *expected,
                    "IR {ir} on runtime {runtime}.x"
                );
            }
        }
        assert_eq!(MATRIX.len(), COMPATIBILITY.len());
    }

    #[test]
    fn refusal_names_both_versions() {
        let err = check_runtime_compatible("3.0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "IR 3.0 needs runtime 3.x or newer; this runtime is 2.0"
        );
    }

    #[test]
    fn unknown_versions_are_refused() {
        for v in ["", "4.0", "1.7", "2", "v2.0", "2.0.0"] {
            let err = check_compatible(v, 3).unwrap_err();
            assert!(matches!(err, Error::UnknownIrVersion { .. }), "{v}: {err}");
            assert!(err.to_string().contains("known: 1.0, 1.5, 2.0, 2.5, 3.0"));
        }
    }

    #[test]
    fn this_build_runs_what_it_emits() {
        check_runtime_compatible(IR_VERSION).expect("emitted IR version must run");
    }
}
