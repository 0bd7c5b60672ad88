//! Phase 1, parse: YAML text to the [`ast`](crate::ast) with `marked-yaml`, so every node
//! keeps its line and column; YAML and shape errors become positioned [`Error`]s.

use marked_yaml::{FromNodeError, LoadError, LoaderOptions, Node, Span};

use crate::ast::Rule;
use crate::error::{Error, Result, Source};

/// Parses the rule text (duplicate keys refused) and deserializes it into a [`Rule`].
pub(crate) fn parse(source: &Source<'_>) -> Result<Rule> {
    let options = LoaderOptions::default().error_on_duplicate_keys(true);
    let node = marked_yaml::parse_yaml_with_options(0, source.text, options)
        .map_err(|e| load_error(source, &e))?;
    marked_yaml::from_node::<Rule>(&node).map_err(|e| node_error(source, &node, e))
}

/// The node at a rendered serde path such as `instructions[2].retry`, if it can be followed.
fn node_at<'a>(root: &'a Node, path: &str) -> Option<&'a Node> {
    let mut node = root;
    for segment in path.split('.') {
        let (name, indexes) = segment.split_at(segment.find('[').unwrap_or(segment.len()));
        if !name.is_empty() {
            node = node.as_mapping()?.get(name)?;
        }
        for index in indexes.split(['[', ']']).filter(|s| !s.is_empty()) {
            node = node.as_sequence()?.get(index.parse::<usize>().ok()?)?;
        }
    }
    Some(node)
}

/// A better span than the deserializer's for errors it places only roughly: an unknown field
/// at its key, a wrong type or a missing field at the node the path names.
fn refine_span(root: &Node, path: Option<&str>, error: &marked_yaml::Error) -> Option<Span> {
    match error {
        marked_yaml::Error::UnknownFieldError(field, ..) => {
            let parent = match path?.rsplit_once('.') {
                Some((parent, _)) => node_at(root, parent)?,
                None => root,
            };
            parent
                .as_mapping()?
                .iter()
                .find(|(k, _)| k.as_str() == field)
                .map(|(k, _)| *k.span())
        }
        marked_yaml::Error::Other(..) => node_at(root, path?).map(|n| *n.span()),
        _ => None,
    }
}

fn load_error(source: &Source<'_>, error: &LoadError) -> Error {
    let (marker, message) = match error {
        LoadError::TopLevelMustBeMapping(m) | LoadError::TopLevelMustBeSequence(m) => (
            Some(*m),
            "the rule is not a YAML mapping; expected `id:`, `version:` and `instructions:` at the top level"
                .to_owned(),
        ),
        LoadError::UnexpectedAnchor(m) => (
            Some(*m),
            "YAML anchors and aliases are not supported; expected plain values".to_owned(),
        ),
        LoadError::UnexpectedTag(m) => (
            Some(*m),
            "YAML tags are not supported; expected plain values".to_owned(),
        ),
        LoadError::MappingKeyMustBeScalar(m) => (
            Some(*m),
            "mapping key is not a scalar; expected a plain name as key".to_owned(),
        ),
        LoadError::ScanError(m, e) => (
            Some(*m),
            format!("YAML syntax error: {}; expected well-formed YAML", e.info()),
        ),
        LoadError::DuplicateKey(inner) => {
            let first = source.at(inner.prev_key.span());
            (
                inner.key.span().start().copied(),
                format!(
                    "duplicate key `{}` (first at line {}); expected each key once per mapping",
                    inner.key.as_str(),
                    first.line
                ),
            )
        }
    };
    let at = match marker {
        Some(m) => source.at_line(m.line(), m.column()),
        None => source.at_line(1, 1),
    };
    Error::Syntax { at, message }
}

fn node_error(source: &Source<'_>, root: &Node, error: FromNodeError) -> Error {
    let path = error.path().map(str::to_owned);
    let inner = error.into_inner();
    let span = refine_span(root, path.as_deref(), &inner)
        .or_else(|| inner.start_mark().map(Span::new_start))
        .unwrap_or_else(Span::new_blank);
    let within = match &path {
        Some(p) => format!("`{p}`"),
        None => "the rule".to_owned(),
    };
    let message = match &inner {
        marked_yaml::Error::UnknownFieldError(field, expected, _) => {
            let parent = path
                .as_deref()
                .and_then(|p| {
                    p.rsplit_once('.')
                        .map(|(parent, _)| format!(" in `{parent}`"))
                })
                .unwrap_or_default();
            format!(
                "unknown field `{field}`{parent}; expected one of: {}",
                expected.join(", ")
            )
        }
        marked_yaml::Error::NotBoolean(_) => {
            format!("{within} is not a boolean; expected true or false")
        }
        marked_yaml::Error::IntegerParseFailure(e, _) => {
            format!("{within} is not a whole number ({e}); expected an integer")
        }
        marked_yaml::Error::FloatParseFailure(e, _) => {
            format!("{within} is not a number ({e}); expected a decimal number")
        }
        marked_yaml::Error::Other(message, _) => {
            if let Some(field) = message.strip_prefix("missing field ") {
                format!("{within} lacks the required field {field}; expected it to be set")
            } else if let Some((what, expected)) = message.split_once(", expected ") {
                format!("{within}: {what}; expected {expected}")
            } else {
                format!("{within}: {message}")
            }
        }
    };
    Error::Schema {
        at: source.at(&span),
        message,
    }
}
