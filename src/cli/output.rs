//! The `--format` flag shared by commands (tables and durations: `canaryd_core::format`).

use clap::ValueEnum;

/// Output format of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Aligned text for people.
    Human,
    /// One JSON document (shape documented in README.md).
    Json,
}
