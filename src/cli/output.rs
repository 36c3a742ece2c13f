//! Output helpers shared by commands: the `--format` flag and aligned tables.

use clap::ValueEnum;

/// Output format of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text for people.
    Human,
    /// One JSON document (shape documented in README.md).
    Json,
}

/// Renders rows as left-aligned columns separated by two spaces; the first row is the header.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> =
            row.iter().enumerate().map(|(i, cell)| format!("{cell:<w$}", w = widths[i])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Seconds as a short human duration: `45s`, `12m`, `2h05m`, `3d4h`.
pub fn human_secs(secs: f64) -> String {
    if !secs.is_finite() {
        return "never".to_string();
    }
    let s = secs.round().max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s / 60 % 60),
        _ => format!("{}d{}h", s / 86_400, s / 3600 % 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_columns() {
        let t = table(&[vec!["a".into(), "bb".into()], vec!["ccc".into(), "d".into()]]);
        assert_eq!(t, "a    bb\nccc  d\n");
    }

    #[test]
    fn formats_durations() {
        assert_eq!(human_secs(45.0), "45s");
        assert_eq!(human_secs(125.0), "2m05s");
        assert_eq!(human_secs(7500.0), "2h05m");
        assert_eq!(human_secs(f64::INFINITY), "never");
    }
}
