//! Where each field of a YAML document is: a map from field path (`spec.steps[1].weight`) to
//! line and column, built from the parser's events.
//!
//! Semantic validation works on typed values and names the field by path; this index turns the
//! path back into a position for the error message. It is built with the same YAML parser that
//! serde-saphyr uses, so positions agree with deserialisation errors.

use serde_saphyr::granit_parser::{Event, Parser};
use std::collections::HashMap;

/// A position in a source file: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Positions of the keys and values of one YAML document, by field path.
#[derive(Debug, Default)]
pub struct LocationIndex {
    /// Path → position of the value (for scalars) or of the key (for collections).
    values: HashMap<String, Position>,
    /// Path → position of the mapping key itself.
    keys: HashMap<String, Position>,
    /// Path of every mapping → its keys in order, for "did you mean" and unknown-field checks.
    mapping_keys: HashMap<String, Vec<String>>,
}

enum Frame {
    Map { path: String, pending_key: Option<String> },
    Seq { path: String, next: usize },
}

impl LocationIndex {
    /// Indexes the first document of `source`. Unparsable YAML yields a partial index (the
    /// deserialiser reports the syntax error itself).
    pub fn build(source: &str) -> Self {
        let mut index = LocationIndex::default();
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(source) {
            let Ok((event, span)) = item else { break };
            let pos = Position { line: span.start.line(), column: span.start.col() + 1 };
            match event {
                Event::DocumentEnd => break,
                Event::Scalar(value, ..) => {
                    if let Some(Frame::Map { path, pending_key }) = stack.last_mut() {
                        if pending_key.is_none() {
                            let child = join_key(path, &value);
                            index.keys.insert(child.clone(), pos);
                            index.mapping_keys.entry(path.clone()).or_default().push(value.to_string());
                            *pending_key = Some(value.to_string());
                            continue;
                        }
                    }
                    if let Some(child) = next_child(&mut stack) {
                        index.values.insert(child, pos);
                    }
                }
                Event::MappingStart(..) => {
                    let path = next_child(&mut stack).unwrap_or_default();
                    index.values.entry(path.clone()).or_insert(pos);
                    index.mapping_keys.entry(path.clone()).or_default();
                    stack.push(Frame::Map { path, pending_key: None });
                }
                Event::SequenceStart(..) => {
                    let path = next_child(&mut stack).unwrap_or_default();
                    index.values.entry(path.clone()).or_insert(pos);
                    stack.push(Frame::Seq { path, next: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                Event::Alias(..) => {
                    next_child(&mut stack);
                }
                _ => {}
            }
        }
        index
    }

    /// Position of the field at `path`: its value, else its key, else the nearest ancestor.
    pub fn position(&self, path: &str) -> Option<Position> {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self.values.get(&p).or_else(|| self.keys.get(&p)) {
                return Some(*pos);
            }
            p = parent(&p)?;
        }
    }

    /// Position of the key of the field at `path` (for unknown-field errors).
    pub fn key_position(&self, path: &str) -> Option<Position> {
        self.keys.get(path).copied().or_else(|| self.position(path))
    }

    /// True when something (scalar, mapping or sequence) is written at exactly `path`.
    pub fn has_value(&self, path: &str) -> bool {
        self.values.contains_key(path)
    }

    /// The field whose value starts at `pos` (to name the field of a deserialisation error).
    pub fn path_at(&self, pos: Position) -> Option<String> {
        self.values.iter().filter(|(_, p)| **p == pos).map(|(k, _)| k.clone()).max_by_key(String::len)
    }

    /// Keys written in the mapping at `path`, in source order.
    pub fn keys_of(&self, path: &str) -> &[String] {
        self.mapping_keys.get(path).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The path of the next child of the innermost collection, advancing it.
fn next_child(stack: &mut [Frame]) -> Option<String> {
    match stack.last_mut()? {
        Frame::Map { path, pending_key } => {
            let key = pending_key.take()?;
            Some(join_key(path, &key))
        }
        Frame::Seq { path, next } => {
            let child = format!("{path}[{next}]");
            *next += 1;
            Some(child)
        }
    }
}

/// `spec` + `steps` → `spec.steps`; the root has an empty path.
pub fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn parent(path: &str) -> Option<String> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        return path.rfind('[').map(|i| path[..i].to_string());
    }
    Some(path.rfind('.').map(|i| path[..i].to_string()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "apiVersion: canaryd.io/v1alpha1\nkind: RolloutPolicy\nspec:\n  steps:\n    - weight: 10\n    - weight: 150\n      bake: 5m\n  target: {virtualService: reviews}\n";

    #[test]
    fn finds_nested_sequence_fields() {
        let idx = LocationIndex::build(DOC);
        assert_eq!(idx.position("spec.steps[1].weight"), Some(Position { line: 6, column: 15 }));
        assert_eq!(idx.position("spec.steps[1].bake"), Some(Position { line: 7, column: 13 }));
        assert_eq!(idx.key_position("spec.steps[1].bake"), Some(Position { line: 7, column: 7 }));
        assert_eq!(idx.position("spec.target.virtualService").map(|p| p.line), Some(8));
    }

    #[test]
    fn falls_back_to_nearest_ancestor() {
        let idx = LocationIndex::build(DOC);
        assert_eq!(idx.position("spec.steps[1].mirror"), idx.position("spec.steps[1]"));
        assert_eq!(idx.keys_of("spec"), ["steps", "target"]);
    }
}
