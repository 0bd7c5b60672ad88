//! Whether a text is a version requirement, exactly as the server's `semver` crate (1.x,
//! `VersionReq::parse`) says: the syntax only — the comparators, their versions, their
//! pre-release and build identifiers, at most 32 of them — without building anything.

/// Whether `text` parses as a `semver::VersionReq`.
pub(crate) fn is_requirement(text: &[u8]) -> bool {
    let text = spaces(text);
    if let Some(rest) = wildcard(text) {
        return spaces(rest).is_empty();
    }
    let mut text = text;
    for _ in 0..MAX_COMPARATORS {
        let Some(rest) = comparator(text) else {
            return false;
        };
        if rest.is_empty() {
            return true;
        }
        let Some(rest) = rest.strip_prefix(b",") else {
            return false;
        };
        text = spaces(rest);
    }
    false
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
fn number(text: &[u8]) -> Option<&[u8]> {
    let digits = text.iter().take_while(|c| c.is_ascii_digit()).count();
    let (number, rest) = text.split_at(digits);
    let fits = number
        .iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .is_some();
    (digits > 0 && fits && (digits == 1 || number[0] != b'0')).then_some(rest)
}

/// One comparator (`[op] major[.minor[.patch[-pre][+build]]]`, wildcards in place of minor
/// or patch); what follows it, leading spaces skipped.
fn comparator(text: &[u8]) -> Option<&[u8]> {
    let rest = ["=", ">=", ">", "<=", "<", "~", "^"]
        .iter()
        .find_map(|op| text.strip_prefix(op.as_bytes()))
        .unwrap_or(text);
    let mut rest = number(spaces(rest))?;
    let mut wild = false;
    let mut patch = false;
    if let Some(after) = rest.strip_prefix(b".") {
        if let Some(after) = wildcard(after) {
            wild = true;
            rest = after;
        } else {
            rest = number(after)?;
        }
        if let Some(after) = rest.strip_prefix(b".") {
            if let Some(after) = wildcard(after) {
                rest = after;
            } else if wild {
                return None;
            } else {
                rest = number(after)?;
                patch = true;
            }
        }
    }
    if patch && let Some(after) = rest.strip_prefix(b"-") {
        rest = identifier(after, true).filter(|r| r.len() < after.len())?;
    }
    if patch && let Some(after) = rest.strip_prefix(b"+") {
        rest = identifier(after, false).filter(|r| r.len() < after.len())?;
    }
    Some(spaces(rest))
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
        const ALPHABET: &[u8] = b"0123456789..**xX^~=><,, --++az0.1";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let len = usize::try_from(next() % 14).unwrap_or(0);
            let text: String = (0..len)
                .map(|_| {
                    char::from(ALPHABET[usize::try_from(next()).unwrap_or(0) % ALPHABET.len()])
                })
                .collect();
            same(&text);
        }
    }
}
