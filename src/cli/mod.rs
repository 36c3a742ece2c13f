//! The command line: clap definitions and dispatch. Each command lives in its own file and
//! returns an exit code: 0 success, 1 the thing checked is bad, 2 usage or environment error.

mod output;
mod plan;
mod validate;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

pub use output::Format;

/// canaryd — progressive delivery for Kubernetes + Istio, decided on evidence.
///
/// canaryd shifts an Istio VirtualService's traffic from a stable to a canary version in
/// steps (10% → 30% → 100%), compares the canary with the baseline statistically after each
/// step, and promotes or aborts. Policies are YAML files (kind: RolloutPolicy) that teams keep
/// in their repos; see README.md, "Policy reference".
#[derive(Debug, Parser)]
#[command(name = "canaryd", version, about, long_about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Check policy files; print every problem with file:line:column. Exit 1 if any is bad.
    ///
    /// Give files or directories (searched for *.yaml / *.yml). Run it in your repository's CI.
    Validate {
        /// Policy files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Output format; `json` gives one object with every error (for CI annotations).
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Show a policy's plan: steps, bake times, next windows, and the traffic each step needs.
    ///
    /// For each step, prints how many canary requests a conclusive verdict needs at the
    /// policy's tolerance and confidence, and how long that takes at --rps requests/s of total
    /// route traffic; warns when a bake time is too short to ever reach a verdict.
    Plan {
        /// The policy file.
        policy: PathBuf,
        /// Total requests per second on the route (both versions together).
        #[arg(long, default_value_t = 20.0)]
        rps: f64,
        /// Baseline error rate to assume, percent.
        #[arg(long, default_value_t = 0.1)]
        baseline_errors: f64,
        /// Show windows as seen from this time (RFC 3339) instead of now.
        #[arg(long)]
        now: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Print the JSON Schema of policy files (for yaml-language-server / editors).
    Schema,
    /// Print the RolloutPolicy CustomResourceDefinition (deploy/crd.yaml is generated from it).
    Crdgen,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Parses the arguments and runs the command; returns the process exit code.
pub fn run() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Commands::Validate { paths, format } => validate::run(&paths, format),
        Commands::Plan { policy, rps, baseline_errors, now, format } => {
            plan::run(&policy, rps, baseline_errors / 100.0, now.as_deref(), format)
        }
        Commands::Schema => print_json(&crate::policy::editor_schema()),
        Commands::Crdgen => match crate::policy::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                0
            }
            Err(e) => {
                eprintln!("error: cannot render the CRD: {e}");
                2
            }
        },
    }
}

fn print_json(value: &serde_json::Value) -> i32 {
    match serde_json::to_string_pretty(value) {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
