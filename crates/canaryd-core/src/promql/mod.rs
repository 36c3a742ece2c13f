//! Custom-check PromQL templates: `{{ name }}` variables, substituted with escaped values.
//!
//! A template is PromQL with variables such as
//! `sum(rate(http_errors_total{namespace="{{ namespace }}",pod=~"{{ workload }}-.*"}[{{ interval }}]))`.
//! Values come from policies and from the cluster, so they are untrusted text: rendering must
//! never let a value change the structure of the query. The renderer therefore tracks where each
//! variable stands in PromQL's lexical grammar and escapes for that place:
//!
//! - inside a `"…"` or `'…'` string: backslash, quote and control characters are escaped;
//! - inside a `` `…` `` raw string (no escapes exist there): a value containing a backtick is
//!   refused;
//! - anywhere else (bare, e.g. a range `[{{ interval }}]`, or in a `#` comment): the value must be
//!   a plain token (`[A-Za-z0-9_:.]`), otherwise rendering fails.
//!
//! The rendered text is then PromQL: [`syntax`] parses it (with promql-parser) and says where a
//! syntax error is; [`confine`] rewrites a RolloutPolicy resource's query so that it can only
//! read its own namespace's series.

use std::collections::HashMap;

pub mod confine;
pub mod syntax;

pub use confine::TenantLabel;

/// Every variable a custom-check template may use.
pub(crate) const TEMPLATE_VARIABLES: &[&str] =
    &["namespace", "workload", "canaryWorkload", "baselineWorkload", "virtualService", "interval"];

/// The values a custom-check template's variables take for one policy and window, typed so
/// that every caller (daemon, backtest, alert links) supplies the same set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateVars {
    /// `{{ namespace }}`: the policy's namespace.
    pub namespace: String,
    /// `{{ canaryWorkload }}` (and `{{ workload }}` on the canary side).
    pub canary_workload: String,
    /// `{{ baselineWorkload }}` (and `{{ workload }}` on the baseline side).
    pub baseline_workload: String,
    /// `{{ virtualService }}`: the policy's VirtualService name.
    pub virtual_service: String,
    /// `{{ interval }}`: the window as a PromQL duration, e.g. `60s`.
    pub interval: String,
}

/// Which side a template is rendered for: it decides what `{{ workload }}` stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Canary,
    Baseline,
}

impl TemplateVars {
    /// Renders `template` for `side`; see [`render`] for the escaping rules.
    pub fn render(&self, template: &str, side: Side) -> Result<String, TemplateError> {
        self.render_mapped(template, side).map(|r| r.text)
    }

    /// [`TemplateVars::render`], keeping where each substituted value came from (to point a
    /// PromQL syntax error back into the template).
    pub fn render_mapped(&self, template: &str, side: Side) -> Result<Rendered, TemplateError> {
        let workload = match side {
            Side::Canary => &self.canary_workload,
            Side::Baseline => &self.baseline_workload,
        };
        let vars: HashMap<&str, String> = [
            ("namespace", self.namespace.clone()),
            ("workload", workload.clone()),
            ("canaryWorkload", self.canary_workload.clone()),
            ("baselineWorkload", self.baseline_workload.clone()),
            ("virtualService", self.virtual_service.clone()),
            ("interval", self.interval.clone()),
        ]
        .into();
        render_mapped(template, &vars)
    }
}

/// A rendered template and, for each substituted variable, its byte range in the template and
/// in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The PromQL text.
    pub text: String,
    /// `(template range, text range)` of every substitution, in order.
    substitutions: Vec<(std::ops::Range<usize>, std::ops::Range<usize>)>,
}

impl Rendered {
    /// The byte offset in the template that produced byte `offset` of the text: the same
    /// character outside substitutions, the variable's `{{` inside one.
    pub fn template_offset(&self, offset: usize) -> usize {
        let mut shift: isize = 0;
        for (template, text) in &self.substitutions {
            if offset < text.start {
                break;
            }
            if offset < text.end {
                return template.start;
            }
            shift = template.end as isize - text.end as isize;
        }
        offset.saturating_add_signed(shift)
    }
}

/// Why a template cannot be rendered. Offsets are byte offsets of the variable's `{{` in the
/// template text (the policy validator turns them into line:column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without a closing `}}`.
    #[error("byte {offset}: `{{{{` is not closed by `}}}}`")]
    Unclosed { offset: usize },
    /// `{{ … }}` whose content is not an identifier.
    #[error("byte {offset}: `{text}` is not a variable name")]
    BadName { offset: usize, text: String },
    /// A well-formed variable that is not one of [`TEMPLATE_VARIABLES`].
    #[error("byte {offset}: the template variable `{name}` does not exist")]
    Unknown { offset: usize, name: String },
    /// A known variable for which the caller supplied no value.
    #[error("byte {offset}: no value for the template variable `{name}`")]
    Missing { offset: usize, name: String },
    /// The variable stands outside a quoted string and its value is not a plain token, so
    /// substituting it would change the query's structure.
    #[error(
        "byte {offset}: the value of `{name}` is not a plain token; put the variable inside a \
         double-quoted string"
    )]
    Unquoted { offset: usize, name: String },
    /// The variable stands inside a backtick raw string and its value contains a backtick.
    #[error("byte {offset}: the value of `{name}` contains a backtick and cannot go in a raw string")]
    Backtick { offset: usize, name: String },
}

impl TemplateError {
    /// Byte offset of the offending `{{` in the template.
    pub fn offset(&self) -> usize {
        match self {
            TemplateError::Unclosed { offset }
            | TemplateError::BadName { offset, .. }
            | TemplateError::Unknown { offset, .. }
            | TemplateError::Missing { offset, .. }
            | TemplateError::Unquoted { offset, .. }
            | TemplateError::Backtick { offset, .. } => *offset,
        }
    }
}

/// Where in PromQL's lexical grammar a variable stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Bare,
    DoubleQuoted,
    SingleQuoted,
    Raw,
    Comment,
}

/// One `{{ … }}` occurrence.
#[derive(Debug)]
struct Occurrence<'a> {
    /// Byte offset of `{{`.
    start: usize,
    /// Byte offset just past `}}`.
    end: usize,
    /// The trimmed text between the braces.
    name: &'a str,
    context: Context,
}

/// Splits a template into its variable occurrences, following PromQL's quoting so that each
/// occurrence knows whether it stands inside a string.
fn scan(template: &str) -> Vec<Result<Occurrence<'_>, TemplateError>> {
    let bytes = template.as_bytes();
    let mut out = Vec::new();
    let mut state = Context::Bare;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(b"{{") {
            let Some(close) = template[i + 2..].find("}}") else {
                out.push(Err(TemplateError::Unclosed { offset: i }));
                break;
            };
            let end = i + 2 + close + 2;
            let name = template[i + 2..i + 2 + close].trim();
            if is_identifier(name) {
                out.push(Ok(Occurrence { start: i, end, name, context: state }));
            } else {
                out.push(Err(TemplateError::BadName { offset: i, text: template[i..end].to_string() }));
            }
            i = end;
            continue;
        }
        let b = bytes[i];
        state = match (state, b) {
            (Context::Bare, b'"') => Context::DoubleQuoted,
            (Context::Bare, b'\'') => Context::SingleQuoted,
            (Context::Bare, b'`') => Context::Raw,
            (Context::Bare, b'#') => Context::Comment,
            (Context::DoubleQuoted | Context::SingleQuoted, b'\\') => {
                // The escaped byte cannot end the string; skip it.
                i += 2;
                continue;
            }
            (Context::DoubleQuoted, b'"') | (Context::SingleQuoted, b'\'') => Context::Bare,
            (Context::Raw, b'`') => Context::Bare,
            (Context::Comment, b'\n') => Context::Bare,
            (s, _) => s,
        };
        i += 1;
    }
    out
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The well-formed `{{ name }}` variables of a template, in order, each with the byte offset of
/// its `{{`. Unknown names are included (the policy validator rejects them with their position);
/// malformed ones are not (see [`check`]).
pub(crate) fn template_variables(template: &str) -> Vec<(String, usize)> {
    scan(template).into_iter().filter_map(Result::ok).map(|o| (o.name.to_string(), o.start)).collect()
}

/// Every problem of a template that does not depend on values: unclosed braces, bad names,
/// unknown variables. Empty when the template is well-formed.
pub fn check(template: &str) -> Vec<TemplateError> {
    scan(template)
        .into_iter()
        .filter_map(|o| match o {
            Err(e) => Some(e),
            Ok(o) if !TEMPLATE_VARIABLES.contains(&o.name) => {
                Some(TemplateError::Unknown { offset: o.start, name: o.name.to_string() })
            }
            Ok(_) => None,
        })
        .collect()
}

/// Substitutes every variable of `template` with its value from `vars`, escaped for the place
/// where it stands (see the module documentation). Fails on the first problem.
pub fn render(template: &str, vars: &HashMap<&str, String>) -> Result<String, TemplateError> {
    render_mapped(template, vars).map(|r| r.text)
}

/// [`render`], keeping the map from the text back to the template.
pub fn render_mapped(template: &str, vars: &HashMap<&str, String>) -> Result<Rendered, TemplateError> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut substitutions = Vec::new();
    let mut copied = 0;
    for occurrence in scan(template) {
        let o = occurrence?;
        if !TEMPLATE_VARIABLES.contains(&o.name) {
            return Err(TemplateError::Unknown { offset: o.start, name: o.name.to_string() });
        }
        let Some(value) = vars.get(o.name) else {
            return Err(TemplateError::Missing { offset: o.start, name: o.name.to_string() });
        };
        out.push_str(&template[copied..o.start]);
        let text_start = out.len();
        match o.context {
            Context::DoubleQuoted => out.push_str(&escape_label_value(value)),
            Context::SingleQuoted => out.push_str(&escape_quoted(value, '\'')),
            Context::Raw if value.contains('`') => {
                return Err(TemplateError::Backtick { offset: o.start, name: o.name.to_string() });
            }
            Context::Raw => out.push_str(value),
            Context::Bare | Context::Comment => {
                if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '.')) {
                    return Err(TemplateError::Unquoted { offset: o.start, name: o.name.to_string() });
                }
                out.push_str(value);
            }
        }
        substitutions.push((o.start..o.end, text_start..out.len()));
        copied = o.end;
    }
    out.push_str(&template[copied..]);
    Ok(Rendered { text: out, substitutions })
}

/// Escapes a value for the inside of a PromQL double-quoted string (a label matcher's value):
/// backslash, double quote and control characters (newline, tab, …) become escape sequences.
pub fn escape_label_value(value: &str) -> String {
    escape_quoted(value, '"')
}

/// Escapes a value to match it literally inside a PromQL regex matcher (`=~"…"`): RE2
/// metacharacters are backslash-escaped, then the result is escaped like
/// [`escape_label_value`]. The result goes between the double quotes as is; join several with
/// `|` for an alternation.
pub fn escape_regex_value(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        // The same set as Go's regexp.QuoteMeta.
        if r"\.+*?()|[]{}^$".contains(c) {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    escape_label_value(&quoted)
}

fn escape_quoted(value: &str, quote: char) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\n' => out.push_str(r"\n"),
            '\r' => out.push_str(r"\r"),
            '\t' => out.push_str(r"\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            // PromQL strings follow Go's escapes; \xHH is a byte, fine for ASCII controls.
            c if c.is_ascii_control() => out.push_str(&format!(r"\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&'static str, &str)]) -> HashMap<&'static str, String> {
        pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn lists_variables_with_byte_offsets_including_unknown_ones() {
        let t = r#"sum(x{a="{{ namespace }}",b="{{workload}}"}) + {{ bogus }}"#;
        assert_eq!(
            template_variables(t),
            vec![("namespace".into(), 9), ("workload".into(), 29), ("bogus".into(), 47)]
        );
    }

    #[test]
    fn check_reports_unclosed_bad_and_unknown_variables() {
        assert_eq!(
            check(r#"x{a="{{ nope }}"} {{ 1x }} {{ namespace"#),
            vec![
                TemplateError::Unknown { offset: 5, name: "nope".into() },
                TemplateError::BadName { offset: 18, text: "{{ 1x }}".into() },
                TemplateError::Unclosed { offset: 27 },
            ]
        );
        assert!(check(r#"x{a="{{ namespace }}"}[{{ interval }}]"#).is_empty());
    }

    #[test]
    fn renders_values_inside_strings_and_plain_tokens_bare() {
        let t = r#"sum(rate(x{namespace="{{ namespace }}",pod=~'{{ workload }}-.*'}[{{ interval }}]))"#;
        let got = render(t, &vars(&[("namespace", "prod"), ("workload", "reviews-v2"), ("interval", "1m")]));
        assert_eq!(got.unwrap(), r#"sum(rate(x{namespace="prod",pod=~'reviews-v2-.*'}[1m]))"#);
    }

    #[test]
    fn injection_through_a_workload_name_stays_inside_the_string() {
        let evil = r#"x"} or vector(1) or {a=""#;
        let t = r#"sum(rate(errors_total{destination_workload="{{ workload }}"}[5m]))"#;
        let got = render(t, &vars(&[("workload", evil)])).unwrap();
        assert_eq!(got, r#"sum(rate(errors_total{destination_workload="x\"} or vector(1) or {a=\""}[5m]))"#);
        // Structure check: outside strings, the rendered query is the template's skeleton.
        assert_eq!(skeleton(&got), skeleton(&t.replace("{{ workload }}", "")));
    }

    #[test]
    fn a_bare_variable_with_a_non_token_value_is_refused() {
        let t = "rate(x[{{ interval }}])";
        assert_eq!(
            render(t, &vars(&[("interval", "5m]) or vector(1) or rate(x[5m")])),
            Err(TemplateError::Unquoted { offset: 7, name: "interval".into() })
        );
    }

    #[test]
    fn a_newline_cannot_end_a_comment_early() {
        let t = "x # {{ workload }}";
        assert!(matches!(
            render(t, &vars(&[("workload", "a\nvector(1)")])),
            Err(TemplateError::Unquoted { .. })
        ));
    }

    #[test]
    fn raw_strings_refuse_backticks_and_escaped_quotes_do_not_end_strings() {
        let t = "x{a=`{{ workload }}`}";
        assert!(matches!(render(t, &vars(&[("workload", "a`b")])), Err(TemplateError::Backtick { .. })));
        // `\"` inside the string keeps the variable inside it.
        let t = r#"x{a="q\"{{ workload }}"}"#;
        assert_eq!(render(t, &vars(&[("workload", "a\"b")])).unwrap(), r#"x{a="q\"a\"b"}"#);
    }

    #[test]
    fn missing_and_unknown_values_are_errors() {
        assert_eq!(
            render(r#"x{a="{{ workload }}"}"#, &HashMap::new()),
            Err(TemplateError::Missing { offset: 5, name: "workload".into() })
        );
        assert!(matches!(render("{{ nope }}", &vars(&[])), Err(TemplateError::Unknown { .. })));
    }

    #[test]
    fn escapes_backslash_quote_and_control_characters() {
        assert_eq!(escape_label_value("a\\b\"c\nd\te\u{1}"), r#"a\\b\"c\nd\te\x01"#);
    }

    #[test]
    fn regex_escaping_quotes_re2_metacharacters_then_the_string() {
        assert_eq!(escape_regex_value("reviews.v2|x(y)"), r#"reviews\\.v2\\|x\\(y\\)"#);
        assert_eq!(escape_regex_value("a\"b"), r#"a\"b"#);
    }

    #[test]
    fn maps_text_offsets_back_to_the_template() {
        let t = r#"rate(x{a="{{ namespace }}"}[{{ interval }}]) * *"#;
        let r = render_mapped(t, &vars(&[("namespace", "a-long-namespace"), ("interval", "60s")])).unwrap();
        assert_eq!(r.text, r#"rate(x{a="a-long-namespace"}[60s]) * *"#);
        // Before the first variable: the same offset; inside a value: its `{{`; after: shifted.
        assert_eq!(r.template_offset(5), 5);
        assert_eq!(r.template_offset(12), 10);
        assert_eq!(r.template_offset(r.text.len() - 1), t.len() - 1);
        assert_eq!(&t[r.template_offset(r.text.find("]").unwrap())..][..1], "]");
    }

    /// The query with every string literal removed: what PromQL parses as structure.
    fn skeleton(q: &str) -> String {
        let mut out = String::new();
        let mut in_string = false;
        let mut chars = q.chars();
        while let Some(c) = chars.next() {
            match (in_string, c) {
                (true, '\\') => {
                    chars.next();
                }
                (_, '"') => in_string = !in_string,
                (false, c) => out.push(c),
                (true, _) => {}
            }
        }
        out
    }
}
