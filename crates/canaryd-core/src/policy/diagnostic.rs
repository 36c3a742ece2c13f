//! Located errors a person reads: file, line, column, field, what is wrong, what is allowed.

use super::locate::Position;
use serde::Serialize;
use std::fmt;

/// One problem in one policy file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    /// File the policy came from (or `<cluster>/namespace/name` for custom resources).
    pub file: String,
    /// Where the offending field is; line 0 when the position is unknown.
    pub line: usize,
    pub column: usize,
    /// Field path, e.g. `spec.steps[1].weight`.
    pub field: String,
    /// What is wrong.
    pub message: String,
    /// What is allowed, or how to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn at(file: &str, pos: Option<Position>, field: &str, message: String) -> Self {
        let pos = pos.unwrap_or_default();
        Diagnostic {
            file: file.to_string(),
            line: pos.line,
            column: pos.column,
            field: field.to_string(),
            message,
            help: None,
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)?;
        } else {
            write!(f, ": {}: {}", self.field, self.message)?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in one run over one or more files.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", render(.0))]
pub struct Diagnostics(pub Vec<Diagnostic>);

fn render(all: &[Diagnostic]) -> String {
    all.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// Closest candidate within a small edit distance, for "did you mean".
pub(crate) fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (edit_distance(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_field_names() {
        assert_eq!(did_you_mean("wieght", ["weight", "bake", "mirror"]), Some("weight"));
        assert_eq!(did_you_mean("virtualservice", ["virtualService", "route"]), Some("virtualService"));
        assert_eq!(did_you_mean("banana", ["weight", "bake"]), None);
    }

    #[test]
    fn renders_in_house_style() {
        let d = Diagnostic::at(
            "p.yaml",
            Some(Position { line: 14, column: 15 }),
            "spec.steps[1].weight",
            "150 is not a percentage".into(),
        )
        .help("weights are 0–100");
        assert_eq!(
            d.to_string(),
            "error: p.yaml:14:15: spec.steps[1].weight: 150 is not a percentage\n  weights are 0–100"
        );
    }
}
