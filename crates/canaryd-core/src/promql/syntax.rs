//! PromQL syntax: a custom query parsed with promql-parser, and where an error is.
//!
//! promql-parser says what is wrong but not where (every grammar error is "invalid promql
//! query", without a position), so this module finds the position itself, best effort:
//!
//! - lexical errors (a stray character, an unterminated string, an unclosed bracket): the
//!   bracket or quote a small scanner finds still open, or the shortest prefix that the
//!   parser's own lexer rejects with the same message;
//! - grammar errors: the first token after which no continuation makes the query valid
//!   (tried with a few: an operand, a string, a duration, a grouping, the closing brackets);
//! - other errors (types, unknown functions, bad matchers): the token the message names.
//!
//! The message is always the parser's (after the unexpected token, for grammar errors).

use promql_parser::parser::{self, Expr};
use std::ops::Range;
use std::panic::{catch_unwind, UnwindSafe};

/// promql-parser's message for every grammar error.
const GRAMMAR_ERROR: &str = "invalid promql query";

/// Longest custom query accepted, in bytes. A check is one expression (realistic ones are a
/// few hundred bytes); the bound keeps parsing, and locating an error (a few dozen parses of
/// prefixes), cheap for the daemon, which validates every RolloutPolicy resource each cycle.
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// Deepest nesting of brackets accepted. promql-parser builds, prints and drops its syntax
/// tree recursively: the bound keeps a hostile query from exhausting the daemon's stack.
pub const MAX_NESTING: usize = 64;

/// A query that is not valid PromQL, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyntaxError {
    /// Byte offset in the text of the token or character where the query goes wrong (the
    /// text's length when it ends too early).
    pub offset: usize,
    /// The parser's message; for grammar errors with the unexpected token.
    pub message: String,
}

impl SyntaxError {
    fn at(offset: usize, message: impl Into<String>) -> Self {
        SyntaxError { offset, message: message.into() }
    }
}

/// Parses `text` (a rendered query: no template variables left) into promql-parser's syntax
/// tree, or says what is wrong and where.
pub fn parse(text: &str) -> Result<Expr, SyntaxError> {
    if text.trim().is_empty() {
        return Err(SyntaxError::at(0, "the query is empty"));
    }
    if text.len() > MAX_QUERY_BYTES {
        return Err(SyntaxError::at(
            0,
            format!("the query is {} bytes; custom queries are limited to {MAX_QUERY_BYTES}", text.len()),
        ));
    }
    let scan = Scan::new(text);
    if let Some(at) = scan.too_deep {
        return Err(SyntaxError::at(at, format!("brackets nest deeper than {MAX_NESTING} levels")));
    }
    parse_quietly(text).map_err(|message| locate(text, &scan, message))
}

/// The parser, with a panic (a bug in it, on input a tenant controls) turned into an error
/// instead of taking the daemon down.
fn parse_quietly(text: &str) -> Result<Expr, String> {
    quietly(|| parser::parse(text)).unwrap_or_else(|| Err("the PromQL parser failed on this query".into()))
}

fn lexes(text: &str) -> Result<(), String> {
    quietly(|| parser::lex::lexer(text).map(drop)).unwrap_or_else(|| Err("the PromQL lexer failed".into()))
}

fn quietly<T>(f: impl FnOnce() -> T + UnwindSafe) -> Option<T> {
    catch_unwind(f).ok()
}

fn locate(text: &str, scan: &Scan, message: String) -> SyntaxError {
    if let Err(lexical) = lexes(text) {
        return SyntaxError::at(lexical_offset(text, scan, &lexical), lexical);
    }
    if message == GRAMMAR_ERROR {
        return match first_dead_token(text, scan) {
            Some(t) => SyntaxError::at(t.start, format!("unexpected `{}` ({GRAMMAR_ERROR})", &text[t])),
            None => SyntaxError::at(
                text.trim_end().len(),
                format!("unexpected end of the query ({GRAMMAR_ERROR})"),
            ),
        };
    }
    if message.contains("unexpected end of input") {
        return SyntaxError::at(text.trim_end().len(), message);
    }
    SyntaxError::at(semantic_offset(text, scan, &message), message)
}

/// Where an error that is neither lexical nor grammatical is (a type error, an unknown
/// function, a bad matcher): the call the message names, if that call alone fails the same
/// way; else the first token after which every way to complete the query fails the same way.
fn semantic_offset(text: &str, scan: &Scan, message: &str) -> usize {
    // Messages name what they are about in quotes: 'rate', 'foo', 'b'.
    let named = message.split('\'').nth(1).filter(|n| !n.is_empty());
    let is_named = |t: &&Range<usize>| named.is_some_and(|n| text[(*t).clone()] == *n);
    for (i, t) in scan.tokens.iter().enumerate().filter(|(_, t)| is_named(t)) {
        if let Some(call) = call_end(text, &scan.tokens[i..]) {
            if parse_quietly(&text[t.start..call]).err().as_deref() == Some(message) {
                return t.start;
            }
        }
    }
    let i = scan.tokens.partition_point(|t| {
        !completions(&text[..t.end]).any(|c| parse_quietly(&c).err().as_deref() == Some(message))
    });
    scan.tokens
        .get(i)
        .or_else(|| scan.tokens.iter().find(is_named))
        .or(scan.tokens.first())
        .map_or(0, |t| t.start)
}

/// The end of `name(…)` when `tokens` starts with a name and an opening parenthesis.
fn call_end(text: &str, tokens: &[Range<usize>]) -> Option<usize> {
    if tokens.get(1).map(|t| &text[t.clone()]) != Some("(") {
        return None;
    }
    let mut depth = 0usize;
    for t in &tokens[1..] {
        match &text[t.clone()] {
            "(" => depth += 1,
            ")" => {
                depth -= 1;
                if depth == 0 {
                    return Some(t.end);
                }
            }
            _ => {}
        }
    }
    None
}

/// Where the lexer's error is: an open bracket or quote the scanner found, else the end of
/// the shortest prefix that the lexer rejects with the same message.
fn lexical_offset(text: &str, scan: &Scan, message: &str) -> usize {
    let open = if message == "unclosed left parenthesis" {
        scan.innermost_open(b'(')
    } else if message.starts_with("unterminated quoted string") {
        scan.unterminated
    } else if message.contains("end of input inside braces") {
        scan.innermost_open(b'{')
    } else if message.contains("end of input inside brackets") {
        scan.innermost_open(b'[')
    } else {
        None
    };
    if let Some(at) = open {
        return at;
    }
    let ends: Vec<(usize, usize)> = text.char_indices().map(|(i, c)| (i, i + c.len_utf8())).collect();
    // The lexer stops at its first error, so every prefix that reaches the offending
    // character fails the same way and none before it does.
    let first = ends.partition_point(|(_, end)| lexes(&text[..*end]).err().as_deref() != Some(message));
    ends.get(first).map_or(0, |(start, _)| *start)
}

/// Text appended to a prefix to see whether a valid query can still follow it, each then
/// completed with the closing brackets the prefix left open.
const CONTINUATIONS: &[&str] = &["", "x", "1", "\"s\"", "1m", "(x)", "x=\"s\"", "=\"s\"", "()"];

/// The first token after which the query cannot be completed, or `None` when every prefix
/// can (the query ends too early).
fn first_dead_token(text: &str, scan: &Scan) -> Option<Range<usize>> {
    // A prefix that can be completed stays so when shortened: binary search.
    let i = scan.tokens.partition_point(|t| completes(&text[..t.end]));
    scan.tokens.get(i).cloned()
}

fn completes(prefix: &str) -> bool {
    // Anything but a grammar error means the grammar accepted the text.
    completions(prefix)
        .any(|c| lexes(&c).is_ok() && parse_quietly(&c).err().as_deref() != Some(GRAMMAR_ERROR))
}

/// `prefix` followed by each of [`CONTINUATIONS`] and the brackets left open.
fn completions(prefix: &str) -> impl Iterator<Item = String> + '_ {
    // A prefix ending in a `#` comment needs a new line before anything can follow it.
    let sep = if Scan::new(prefix).comment_at_end { "\n" } else { " " };
    CONTINUATIONS.iter().map(move |c| {
        let mut candidate = format!("{prefix}{sep}{c}");
        candidate.push_str(&Scan::new(&candidate).closers());
        candidate
    })
}

/// PromQL's tokens as far as positions need them: strings (with their quotes), words
/// (names, numbers, durations), operators and brackets; comments and spaces skipped.
#[derive(Debug, Default)]
struct Scan {
    tokens: Vec<Range<usize>>,
    /// Brackets still open at the end: the byte and its offset.
    open: Vec<(u8, usize)>,
    /// Offset of a string's opening quote that is never closed.
    unterminated: Option<usize>,
    /// The text ends inside a `#` comment.
    comment_at_end: bool,
    /// Offset of the first bracket deeper than [`MAX_NESTING`].
    too_deep: Option<usize>,
}

impl Scan {
    fn new(text: &str) -> Scan {
        let b = text.as_bytes();
        let mut s = Scan::default();
        let mut i = 0;
        while i < b.len() {
            let start = i;
            match b[i] {
                c if c.is_ascii_whitespace() => {
                    i += 1;
                    continue;
                }
                b'#' => {
                    while i < b.len() && b[i] != b'\n' {
                        i += 1;
                    }
                    s.comment_at_end = i == b.len();
                    continue;
                }
                q @ (b'"' | b'\'' | b'`') => {
                    i += 1;
                    loop {
                        if i >= b.len() {
                            s.unterminated = Some(start);
                            i = b.len();
                            break;
                        }
                        if b[i] == b'\\' && q != b'`' {
                            i = (i + 2).min(b.len());
                            continue;
                        }
                        i += 1;
                        if b[i - 1] == q {
                            break;
                        }
                    }
                }
                c if is_word(c) => {
                    while i < b.len() && (is_word(b[i]) || is_exponent_sign(b, start, i)) {
                        i += 1;
                    }
                }
                open @ (b'(' | b'[' | b'{') => {
                    i += 1;
                    s.open.push((open, start));
                    if s.open.len() > MAX_NESTING && s.too_deep.is_none() {
                        s.too_deep = Some(start);
                    }
                }
                close @ (b')' | b']' | b'}') => {
                    i += 1;
                    if s.open.last().is_some_and(|(o, _)| closer(*o) == close) {
                        s.open.pop();
                    }
                }
                c => {
                    let two = b.get(i..i + 2).unwrap_or_default();
                    i += if matches!(two, b"==" | b"!=" | b"=~" | b"!~" | b"<=" | b">=") {
                        2
                    } else if c.is_ascii() {
                        1
                    } else {
                        text[i..].chars().next().map_or(1, char::len_utf8)
                    };
                }
            }
            s.tokens.push(start..i);
        }
        s
    }

    /// The brackets that close what is open, innermost first.
    fn closers(&self) -> String {
        self.open.iter().rev().map(|(o, _)| char::from(closer(*o))).collect()
    }

    fn innermost_open(&self, bracket: u8) -> Option<usize> {
        self.open.iter().rev().find(|(o, _)| *o == bracket).map(|(_, at)| *at)
    }
}

fn closer(open: u8) -> u8 {
    match open {
        b'(' => b')',
        b'[' => b']',
        _ => b'}',
    }
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b':' | b'.')
}

/// The sign of a decimal exponent (`1e-3`) belongs to its number.
fn is_exponent_sign(b: &[u8], start: usize, i: usize) -> bool {
    matches!(b[i], b'+' | b'-')
        && i > start
        && matches!(b[i - 1], b'e' | b'E')
        && (b[start].is_ascii_digit() || b[start] == b'.')
        && !b[start..i].starts_with(b"0x")
        && b.get(i + 1).is_some_and(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The error's message and the text from its offset on (where it points).
    fn error(text: &str) -> (String, &str) {
        let e = parse(text).unwrap_err();
        (e.message, &text[e.offset..])
    }

    #[test]
    fn realistic_queries_parse() {
        for q in [
            r#"sum(rate(istio_requests_total{reporter="destination",response_code=~"5.."}[1m]))"#,
            r#"histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) # p99"#,
            "rate(x[5m] @ start() offset -1h) + rate(y[5m:1m])",
            "1e-3 * sum(x) / on() group_left count(y)",
        ] {
            assert!(parse(q).is_ok(), "{q}: {:?}", parse(q).err());
        }
    }

    #[test]
    fn a_grammar_error_points_at_the_unexpected_token() {
        assert_eq!(error("sum(rate(x[5m])) * * 2"), ("unexpected `*` (invalid promql query)".into(), "* 2"));
        assert_eq!(error("sum(x) by (le) y").1, "y");
        assert_eq!(error(r#"rate(x[5m]) +"#).0, "unexpected end of the query (invalid promql query)");
        assert_eq!(
            error(r#"x{a="b"} offset  "#),
            ("unexpected end of input in offset, expected duration".into(), "  ")
        );
        assert_eq!(error("histogram_quantile(0.9, sum by (le) rate(x[5m]))").1, "rate(x[5m]))");
        // A comment does not hide what follows it on the next line.
        assert_eq!(error("sum(x) # total\n  +").1, "");
    }

    #[test]
    fn lexical_errors_point_at_the_character_or_the_open_bracket() {
        assert_eq!(error("x $ 2"), ("unexpected character: '$'".into(), "$ 2"));
        assert_eq!(error("sum(rate(x[5m])").1, "(rate(x[5m])");
        assert_eq!(error(r#"x{a="b"} + y{c="d"#).1, r#""d"#);
        assert_eq!(error("rate(x[{{ interval }}])").1, "{{ interval }}])");
        assert_eq!(error(r#"x{a="b""#).1, r#"{a="b""#);
    }

    #[test]
    fn type_errors_point_at_what_they_name() {
        let (message, at) = error("1 + rate(x)");
        assert_eq!(message, "expected type matrix in call to function 'rate', got vector");
        assert_eq!(at, "rate(x)");
        assert_eq!(error("rate(x[1m]) + rate(x)").1, "rate(x)");
        assert_eq!(error("sum(x) + foo(x)").1, "foo(x)");
        assert_eq!(error(r#"x{c="b"} + x{a=b}"#).1, "b}");
        assert_eq!(error("x + sum(y) offset 5m").1, "offset 5m");
    }

    #[test]
    fn deep_nesting_and_huge_queries_are_refused_before_parsing() {
        let deep = format!("{}x{}", "(".repeat(MAX_NESTING + 1), ")".repeat(MAX_NESTING + 1));
        assert_eq!(parse(&deep).unwrap_err().offset, MAX_NESTING);
        assert!(parse(&"x+".repeat(MAX_QUERY_BYTES)).unwrap_err().message.contains("limited"));
        assert!(parse("  ").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, .. ProptestConfig::default() })]

        /// Whatever the input, an error has an offset inside the text, on a character boundary.
        #[test]
        fn errors_point_inside_the_text(q in r#"[ -~\n]{0,40}|(sum|rate|by|\(|\)|\[|\]|\{|\}|x|"a"|=|=~|5m|:|,|\+|offset|@|#| |\n){0,16}"#) {
            if let Err(e) = parse(&q) {
                prop_assert!(e.offset <= q.len() && q.is_char_boundary(e.offset), "{q:?}: {e:?}");
            }
        }
    }
}
