//! Where each field of a YAML document is: a map from field path (`spec.steps[1].weight`) to
//! line and column, built from the parser's events.
//!
//! Semantic validation works on typed values and names the field by path; this index turns the
//! path back into a position for the error message. It is built with the same YAML parser that
//! serde-saphyr uses, so positions agree with deserialisation errors.

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};
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
    /// Path of every scalar value → where it starts and how it is written, to point inside it.
    scalars: HashMap<String, ScalarStart>,
    /// The source, kept to point inside scalar values.
    source: String,
}

/// Where a scalar value starts in the source (at its opening quote, if any).
#[derive(Debug, Clone, Copy)]
struct ScalarStart {
    /// Character index in the source.
    index: usize,
    line: usize,
    /// 0-based character column.
    col: usize,
    style: ScalarStyle,
}

enum Frame {
    Map { path: String, pending_key: Option<String> },
    Seq { path: String, next: usize },
}

impl LocationIndex {
    /// Indexes the first document of `source`. Unparsable YAML yields a partial index (the
    /// deserialiser reports the syntax error itself).
    pub fn build(source: &str) -> Self {
        let mut index = LocationIndex { source: source.to_string(), ..LocationIndex::default() };
        let mut stack: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(source) {
            let Ok((event, span)) = item else { break };
            let pos = Position { line: span.start.line(), column: span.start.col() + 1 };
            match event {
                Event::DocumentEnd => break,
                Event::Scalar(value, style, ..) => {
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
                        let start = ScalarStart {
                            index: span.start.index(),
                            line: span.start.line(),
                            col: span.start.col(),
                            style,
                        };
                        index.scalars.insert(child.clone(), start);
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

    /// Where byte `offset` of the scalar `value` at `path` is in the source, for an error inside a
    /// value (a PromQL syntax error in a query). Plain, quoted (with escapes) and block scalars:
    /// the decoded value and the source agree on their non-blank characters, which are matched
    /// one to one; an offset on a blank (or at the end) points just after the non-blank
    /// character before it. `None` when `path` is no scalar written in this source.
    pub fn position_in_value(&self, path: &str, value: &str, offset: usize) -> Option<Position> {
        let start = self.scalars.get(path)?;
        let offset = (0..=offset.min(value.len())).rev().find(|i| value.is_char_boundary(*i))?;
        let before = value[..offset].chars().filter(|c| !c.is_whitespace()).count();
        let on_blank = value[offset..].chars().next().is_none_or(char::is_whitespace);
        let mut decoded = Decoded::new(&self.source, *start);
        if on_blank {
            if before == 0 {
                return Some(decoded.content_start());
            }
            let last = decoded.nth_non_blank(before - 1)?;
            return Some(Position { line: last.line, column: last.column + 1 });
        }
        decoded.nth_non_blank(before)
    }

    /// Keys written in the mapping at `path`, in source order.
    pub fn keys_of(&self, path: &str) -> &[String] {
        self.mapping_keys.get(path).map(Vec::as_slice).unwrap_or(&[])
    }
}

/// The characters of a scalar as YAML decodes them, each with the position of the source text
/// it came from (an escape sequence's backslash, a doubled quote's first quote).
struct Decoded<'a> {
    chars: std::iter::Peekable<std::iter::Skip<std::str::Chars<'a>>>,
    style: ScalarStyle,
    line: usize,
    col: usize,
}

impl<'a> Decoded<'a> {
    fn new(source: &'a str, start: ScalarStart) -> Self {
        let mut d = Decoded {
            chars: source.chars().skip(start.index).peekable(),
            style: start.style,
            line: start.line,
            col: start.col,
        };
        // Quoted scalars start at their quote; block scalars at their content's first line
        // (past the `|` / `>` header).
        if matches!(start.style, ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted) {
            d.bump();
        }
        d
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.col = 0;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// Where the content starts (past the opening quote or the header line).
    fn content_start(&self) -> Position {
        Position { line: self.line, column: self.col + 1 }
    }

    /// The next decoded character and where its source text starts; `None` at the end of a
    /// quoted scalar or of the source.
    fn next_decoded(&mut self) -> Option<(char, Position)> {
        let at = self.content_start();
        let c = self.bump()?;
        let decoded = match (self.style, c) {
            (ScalarStyle::SingleQuoted, '\'') if self.chars.peek() == Some(&'\'') => {
                self.bump();
                '\''
            }
            (ScalarStyle::SingleQuoted, '\'') | (ScalarStyle::DoubleQuoted, '"') => return None,
            (ScalarStyle::DoubleQuoted, '\\') => {
                let e = self.bump()?;
                let hex = match e {
                    'x' => 2,
                    'u' => 4,
                    'U' => 8,
                    _ => 0,
                };
                if hex > 0 {
                    let digits: String = (0..hex).filter_map(|_| self.bump()).collect();
                    u32::from_str_radix(&digits, 16).ok().and_then(char::from_u32).unwrap_or('?')
                } else {
                    match e {
                        // An escaped line break: nothing.
                        '\n' => ' ',
                        '0' => '\0',
                        'a' => '\u{7}',
                        'b' => '\u{8}',
                        't' | '\t' => '\t',
                        'n' => '\n',
                        'v' => '\u{b}',
                        'f' => '\u{c}',
                        'r' => '\r',
                        'e' => '\u{1b}',
                        'N' => '\u{85}',
                        '_' => '\u{a0}',
                        'L' => '\u{2028}',
                        'P' => '\u{2029}',
                        other => other,
                    }
                }
            }
            (_, c) => c,
        };
        Some((decoded, at))
    }

    /// The position of the `n`th (0-based) non-blank decoded character.
    fn nth_non_blank(&mut self, n: usize) -> Option<Position> {
        let mut seen = 0;
        while let Some((c, at)) = self.next_decoded() {
            if !c.is_whitespace() {
                if seen == n {
                    return Some(at);
                }
                seen += 1;
            }
        }
        None
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

    /// `(line, column)` of byte `offset` of the value `a.q` of `source`.
    fn inside(source: &str, offset: usize) -> (usize, usize) {
        #[derive(serde::Deserialize)]
        struct A {
            q: String,
        }
        #[derive(serde::Deserialize)]
        struct Doc {
            a: A,
        }
        let value = serde_saphyr::from_str::<Doc>(source).unwrap().a.q;
        let p = LocationIndex::build(source).position_in_value("a.q", &value, offset).unwrap();
        (p.line, p.column)
    }

    #[test]
    fn points_inside_plain_quoted_and_block_scalars() {
        // The second `*` of `rate(x) * * 2`, in every style.
        assert_eq!(inside("a:\n  q: rate(x) * * 2\n", 10), (2, 16));
        assert_eq!(inside("a:\n  q: rate(x)\n    * * 2\n", 10), (3, 7));
        assert_eq!(inside("a:\n  q: \"rate(\\x78) *\\n * 2\"\n", 11), (2, 22));
        assert_eq!(inside("a:\n  q: 'rate(''x'') * * 2'\n", 12), (2, 21));
        assert_eq!(inside("a:\n  q: |\n    rate(x)\n      * * 2\n", 12), (4, 9));
        assert_eq!(inside("a:\n  q: >-  # note\n    rate(x)\n    * * 2\n", 10), (4, 7));
        // At the end: just after the last character.
        assert_eq!(inside("a:\n  q: rate(x) +\n", 10), (2, 15));
        assert_eq!(inside("a: {q: x}\n", 0), (1, 8));
    }

    #[test]
    fn falls_back_to_nearest_ancestor() {
        let idx = LocationIndex::build(DOC);
        assert_eq!(idx.position("spec.steps[1].mirror"), idx.position("spec.steps[1]"));
        assert_eq!(idx.keys_of("spec"), ["steps", "target"]);
    }
}
