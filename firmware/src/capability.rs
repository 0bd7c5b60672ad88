//! The board's capabilities, and whether they meet the version requirements a program
//! states on them (`semver`: the server's syntax and matching; a comparator with a
//! pre-release is never met). A requirement not met is refused like a missing capability.

/// A capability the board provides, with its version.
#[derive(Debug, Clone, Copy)]
pub struct Capability {
    /// Its id (`gpio`, `adc`, …), as programs name it; `*` stands for any id (a
    /// simulated board that has every device its script answers for).
    pub id: &'static str,
    /// Its version `(major, minor, patch)`.
    pub version: (u64, u64, u64),
}

/// Whether `board` has capability `id` in a version meeting `requirement` (empty = any).
pub(crate) fn provided(board: &[Capability], id: &str, requirement: &str) -> bool {
    board
        .iter()
        .find(|c| c.id == id || c.id == "*")
        .is_some_and(|c| {
            requirement.is_empty()
                || crate::semver::requirement(requirement.as_bytes(), c.version) == Some(true)
        })
}
