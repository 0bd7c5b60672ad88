//! The board's capabilities and the semver requirements a program states on them. A
//! subset of Cargo's requirement syntax: comma-separated comparators `=`, `>`, `>=`, `<`,
//! `<=`, `^`, `~`, a bare version (caret) and `*`, on `MAJOR[.MINOR[.PATCH]]` without
//! pre-releases. A requirement outside the subset is refused like a missing capability.

/// A capability the board provides, with its version.
#[derive(Debug, Clone, Copy)]
pub struct Capability {
    /// Its id (`gpio`, `adc`, …), as programs name it; `*` stands for any id (a
    /// simulated board that has every device its script answers for).
    pub id: &'static str,
    /// Its version `(major, minor, patch)`.
    pub version: (u64, u64, u64),
}

/// Whether `board` has capability `id` in a version meeting `requirement` (empty = any),
/// whose syntax loading checked (`semver`): its only blanks are spaces.
pub(crate) fn provided(board: &[Capability], id: &str, requirement: &str) -> bool {
    board
        .iter()
        .find(|c| c.id == id || c.id == "*")
        .is_some_and(|c| {
            requirement.trim_matches(' ').is_empty()
                || matches(requirement, c.version) == Some(true)
        })
}

/// Whether `version` meets `requirement`; `None` if the requirement is outside the subset.
fn matches(requirement: &str, version: (u64, u64, u64)) -> Option<bool> {
    let mut all = true;
    for comparator in requirement.split(',') {
        all &= comparator_matches(comparator.trim_matches(' '), version)?;
    }
    Some(all)
}

fn comparator_matches(text: &str, v: (u64, u64, u64)) -> Option<bool> {
    if text == "*" {
        return Some(true);
    }
    let (op, rest) = ["<=", ">=", "=", "<", ">", "^", "~"]
        .into_iter()
        .find_map(|op| text.strip_prefix(op).map(|rest| (op, rest)))
        .unwrap_or(("^", text));
    let (major, minor, patch) = partial(rest.trim_matches(' '))?;
    let floor = (major, minor.unwrap_or(0), patch.unwrap_or(0));
    Some(match op {
        "=" => v.0 == major && minor.is_none_or(|m| v.1 == m) && patch.is_none_or(|p| v.2 == p),
        ">=" => v >= floor,
        ">" => match (minor, patch) {
            (None, _) => v.0 > major,
            (Some(m), None) => (v.0, v.1) > (major, m),
            (Some(_), Some(_)) => v > floor,
        },
        "<" => v < floor,
        "<=" => match (minor, patch) {
            (None, _) => v.0 <= major,
            (Some(m), None) => (v.0, v.1) <= (major, m),
            (Some(_), Some(_)) => v <= floor,
        },
        "~" => v >= floor && v.0 == major && minor.is_none_or(|m| v.1 == m),
        // Caret: the leftmost non-zero part stays.
        _ => {
            v >= floor
                && if major > 0 || minor.is_none() {
                    v.0 == major
                } else if floor.1 > 0 || patch.is_none() {
                    v.0 == 0 && v.1 == floor.1
                } else {
                    v == floor
                }
        }
    })
}

/// `MAJOR[.MINOR[.PATCH]]`.
fn partial(text: &str) -> Option<(u64, Option<u64>, Option<u64>)> {
    let mut parts = text.split('.');
    let number = |p: Option<&str>| -> Option<Option<u64>> {
        match p {
            None => Some(None),
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse().ok().map(Some)
            }
            Some(_) => None,
        }
    };
    let major = number(parts.next())??;
    let minor = number(parts.next())?;
    let patch = number(parts.next())?;
    if parts.next().is_some() || (minor.is_none() && patch.is_some()) {
        return None;
    }
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_of_the_subset() {
        let v = (1, 2, 3);
        assert_eq!(matches("^1.2", v), Some(true));
        assert_eq!(matches("^1.3", v), Some(false));
        assert_eq!(matches(">=1.0, <3", v), Some(true));
        assert_eq!(matches(">=2", v), Some(false));
        assert_eq!(matches("~1.2.1", v), Some(true));
        assert_eq!(matches("=1.2.3", v), Some(true));
        assert_eq!(matches("1", v), Some(true));
        assert_eq!(matches("*", v), Some(true));
        assert_eq!(matches("^0.2", (0, 3, 0)), Some(false));
        assert_eq!(matches("1.2.3-rc.1", v), None);
        assert_eq!(matches("1.x", v), None);
    }
}
