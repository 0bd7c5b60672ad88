//! Version requirements exactly as the server's `semver` crate (1.x, `VersionReq::parse`)
//! reads them: the syntax — the comparators, their versions, their pre-release and build
//! identifiers, at most 32 of them — checked without building anything, and whether a
//! board's version (`MAJOR.MINOR.PATCH`, no pre-release) meets one. A comparator with a
//! pre-release identifier is never met here (stricter than semver, which orders a release
//! after its pre-releases: a board's capability versions have none).

/// A board's version, `(major, minor, patch)`.
pub(crate) type Version = (u64, u64, u64);

/// Whether `text` parses as a `semver::VersionReq`.
pub(crate) fn is_requirement(text: &[u8]) -> bool {
    requirement(text, (0, 0, 0)).is_some()
}

/// Whether `version` meets requirement `text`; `None` if `text` does not parse.
pub(crate) fn requirement(text: &[u8], version: Version) -> Option<bool> {
    let text = spaces(text);
    if let Some(rest) = wildcard(text) {
        return spaces(rest).is_empty().then_some(true);
    }
    let mut text = text;
    let mut met = true;
    for _ in 0..MAX_COMPARATORS {
        let (parsed, rest) = comparator(text)?;
        met &= parsed.matches(version);
        if rest.is_empty() {
            return Some(met);
        }
        text = spaces(rest.strip_prefix(b",")?);
    }
    None
}

/// The most comparators a requirement holds.
const MAX_COMPARATORS: usize = 32;

fn spaces(text: &[u8]) -> &[u8] {
    let skip = text.iter().take_while(|&&c| c == b' ').count();
    &text[skip..]
}

fn wildcard(text: &[u8]) -> Option<&[u8]> {
    match text.split_first() {
        Some((b'*' | b'x' | b'X', rest)) => Some(rest),
        _ => None,
    }
}

/// A number without a leading zero that fits in a `u64`; what follows it.
fn number(text: &[u8]) -> Option<(u64, &[u8])> {
    let digits = text.iter().take_while(|c| c.is_ascii_digit()).count();
    let (number, rest) = text.split_at(digits);
    let value = number.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })?;
    (digits > 0 && (digits == 1 || number[0] != b'0')).then_some((value, rest))
}

/// A version part after a dot: a number, or a wildcard (`None`); what follows it.
fn part(text: &[u8]) -> Option<(Option<u64>, &[u8])> {
    match wildcard(text) {
        Some(rest) => Some((None, rest)),
        None => number(text).map(|(n, rest)| (Some(n), rest)),
    }
}

/// One comparator, as read.
#[derive(Debug, Clone, Copy)]
struct Comparator {
    /// Its operator: `=`, `>`, `<`, `^`, `~`, or `G` for `>=` and `L` for `<=`; a bare
    /// version is `^`, a bare one with a wildcard `=` (semver's `Op::Wildcard` matches as
    /// `Op::Exact` does).
    op: u8,
    major: u64,
    minor: Option<u64>,
    patch: Option<u64>,
    /// A pre-release identifier follows the version.
    tagged: bool,
}

impl Comparator {
    /// Whether `v` meets it, as `semver::Comparator::matches` says of a version without
    /// a pre-release (a tagged comparator: never).
    fn matches(&self, v: Version) -> bool {
        let (major, minor, patch) = (self.major, self.minor, self.patch);
        let floor = (major, minor.unwrap_or(0), patch.unwrap_or(0));
        !self.tagged
            && match self.op {
                b'=' => {
                    v.0 == major && minor.is_none_or(|m| v.1 == m) && patch.is_none_or(|p| v.2 == p)
                }
                b'G' => v >= floor,
                b'>' => match (minor, patch) {
                    (None, _) => v.0 > major,
                    (Some(m), None) => (v.0, v.1) > (major, m),
                    (Some(_), Some(_)) => v > floor,
                },
                b'<' => v < floor,
                b'L' => match (minor, patch) {
                    (None, _) => v.0 <= major,
                    (Some(m), None) => (v.0, v.1) <= (major, m),
                    (Some(_), Some(_)) => v <= floor,
                },
                b'~' => v >= floor && v.0 == major && minor.is_none_or(|m| v.1 == m),
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
            }
    }
}

/// One comparator (`[op] major[.minor[.patch[-pre][+build]]]`, wildcards in place of minor
/// or patch); what follows it, leading spaces skipped.
fn comparator(text: &[u8]) -> Option<(Comparator, &[u8])> {
    let (op, rest) = [
        (b'=', &b"="[..]),
        (b'G', b">="),
        (b'>', b">"),
        (b'L', b"<="),
        (b'<', b"<"),
        (b'~', b"~"),
        (b'^', b"^"),
    ]
    .into_iter()
    .find_map(|(op, prefix)| Some((Some(op), text.strip_prefix(prefix)?)))
    .unwrap_or((None, text));
    let (major, mut rest) = number(spaces(rest))?;
    let (mut minor, mut patch) = (None, None);
    let mut wild = false;
    if let Some(after) = rest.strip_prefix(b".") {
        (minor, rest) = part(after)?;
        wild = minor.is_none();
        if let Some(after) = rest.strip_prefix(b".") {
            (patch, rest) = part(after)?;
            if wild && patch.is_some() {
                return None;
            }
            wild |= patch.is_none();
        }
    }
    let mut tagged = false;
    if patch.is_some()
        && let Some(after) = rest.strip_prefix(b"-")
    {
        rest = identifier(after, true).filter(|r| r.len() < after.len())?;
        tagged = true;
    }
    // Build metadata: read, and ignored in matching (as semver does).
    if patch.is_some()
        && let Some(after) = rest.strip_prefix(b"+")
    {
        rest = identifier(after, false).filter(|r| r.len() < after.len())?;
    }
    let op = op.unwrap_or(if wild { b'=' } else { b'^' });
    let parsed = Comparator {
        op,
        major,
        minor,
        patch,
        tagged,
    };
    Some((parsed, spaces(rest)))
}

/// Dot-separated segments of `[0-9A-Za-z-]` (a numeric pre-release segment without a
/// leading zero); what follows them (`text` itself when there is none).
fn identifier(text: &[u8], pre: bool) -> Option<&[u8]> {
    let mut at = 0;
    loop {
        let segment = text[at..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == b'-')
            .count();
        let boundary = text.get(at + segment);
        if segment == 0 {
            return (at == 0 && boundary != Some(&b'.')).then_some(text);
        }
        let digits = text[at..at + segment].iter().all(u8::is_ascii_digit);
        if pre && segment > 1 && digits && text[at] == b'0' {
            return None;
        }
        at += segment;
        if boundary == Some(&b'.') {
            at += 1;
        } else {
            return Some(&text[at..]);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::String;

    use super::*;

    fn same(text: &str) {
        assert_eq!(
            is_requirement(text.as_bytes()),
            semver::VersionReq::parse(text).is_ok(),
            "{text:?}"
        );
    }

    #[test]
    fn says_what_semver_says() {
        for text in [
            "",
            " ",
            "*",
            " * ",
            "x",
            "X",
            "*, 1",
            "x1",
            "1",
            "01",
            "0",
            "1.2.3",
            "^1.0",
            ">=1.2, <2",
            "~1",
            "=1.2.3-alpha.1+build.5",
            "1.2.3-01",
            "1.2.3-0a",
            "1.2.3-",
            "1.2.3+",
            "1.*",
            "1.x.3",
            "1.*.*",
            "1.2.*-pre",
            "1.2-pre",
            "> 1",
            ">= 1 , < 2",
            "1,",
            ",1",
            "1 2",
            "18446744073709551615",
            "18446744073709551616",
            "1.2.3-a..b",
            "1.2.3-a.",
            "1.2.3+a.b-c",
            "^1.2.3-rc.0",
            "1.2.3 - 2",
            "=*",
            "1.2.3.4",
        ] {
            same(text);
        }
        let many = |n: usize| (0..n).map(|_| "1").collect::<std::vec::Vec<_>>().join(",");
        same(&many(32));
        same(&many(33));
    }

    #[test]
    fn says_what_semver_says_on_random_texts() {
        let mut text = texts(b"0123456789..**xX^~=><,, --++az0.1", 0x2545_f491_4f6c_dd1d);
        for _ in 0..200_000 {
            same(&text());
        }
    }

    /// Random texts over `alphabet`, up to 13 bytes, from `seed`.
    fn texts(alphabet: &'static [u8], seed: u64) -> impl FnMut() -> String {
        let mut state = seed;
        move || {
            let mut next = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                usize::try_from(state % 1_000_003).unwrap_or(0)
            };
            let len = next() % 14;
            (0..len)
                .map(|_| char::from(alphabet[next() % alphabet.len()]))
                .collect()
        }
    }

    /// Whether `version` meets `text`, for us and for semver (which must parse it).
    fn met(text: &str, version: Version) -> (bool, bool) {
        let ours = requirement(text.as_bytes(), version).expect("a requirement");
        let req = semver::VersionReq::parse(text).expect("semver parses it");
        let theirs = req.matches(&semver::Version::new(version.0, version.1, version.2));
        (ours, theirs)
    }

    #[test]
    fn a_version_meets_what_semver_says_it_meets() {
        let versions = [
            (0, 0, 0),
            (0, 0, 3),
            (0, 2, 0),
            (0, 2, 5),
            (1, 0, 0),
            (1, 2, 3),
            (2, 0, 1),
        ];
        for text in [
            "^1.2",
            "^0.2",
            "^0.0.3",
            "^0.0",
            "^0",
            "~1.2.1",
            "~1",
            ">1.2",
            "<=1.2",
            ">=1.0, <3",
            "=1.2.3",
            "1",
            "1.2.*",
            "1.x",
            "*",
            "x",
            ">1.*",
            "1.2.3+build.5",
        ] {
            for v in versions {
                let (ours, theirs) = met(text, v);
                assert_eq!(ours, theirs, "{text:?} {v:?}");
            }
        }
        // Random requirements (no pre-release: those are never met here).
        let mut text = texts(b"0123456789..**xX^~=><,, 01.2.1", 0x9e37_79b9_7f4a_7c15);
        let mut checked = 0;
        for _ in 0..100_000 {
            let text = text();
            if !is_requirement(text.as_bytes()) {
                continue;
            }
            for v in versions {
                let (ours, theirs) = met(&text, v);
                assert_eq!(ours, theirs, "{text:?} {v:?}");
            }
            checked += 1;
        }
        assert!(checked > 5_000, "{checked}");
        // A pre-release comparator is not met, even where semver would say so.
        assert_eq!(requirement(b">=1.2.3-rc.1", (2, 0, 0)), Some(false));
        assert_eq!(requirement(b">=1.2.3-rc.1, <3", (2, 0, 0)), Some(false));
        assert_eq!(requirement(b"1.2.3-", (1, 2, 3)), None);
    }
}
