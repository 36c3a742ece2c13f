//! The command line: clap definitions and dispatch. Each command lives in its own file and
//! returns an exit code: 0 success, 1 the thing checked is bad, 2 usage or environment error.

mod backtest;
mod cluster;
#[cfg(feature = "demo")]
mod demo;
pub(crate) mod output;
mod plan;
mod run;
pub(crate) mod validate;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

pub(crate) use output::Format;

/// canaryd — progressive delivery for Kubernetes + Istio, decided on evidence.
///
/// canaryd shifts an Istio VirtualService's traffic from a stable to a canary version in
/// steps (10% → 30% → 100%), compares the canary with the baseline statistically after each
/// step, and promotes or aborts. Policies are YAML files (kind: RolloutPolicy) that teams keep
/// in their repos; see README.md, "Policy reference".
#[derive(Debug, Parser)]
#[command(name = "canaryd", version, about, long_about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Commands {
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
    /// The whole product on a laptop: the daemon against an in-process cluster, compressed time.
    ///
    /// Runs the real engine, judge and VirtualService writer against a Kubernetes API emulator
    /// holding bookinfo's `reviews` VirtualService and a simulated mesh whose traffic follows
    /// the weights canaryd writes. Release 1 (v2, healthy) is promoted; release 2 (v3, faulty)
    /// is aborted and its alert written to a local mailbox file.
    #[cfg(feature = "demo")]
    Demo(demo::DemoArgs),
    /// Run the daemon: reconcile every policy in a directory against the cluster until SIGTERM.
    ///
    /// Policies are re-read every cycle (mount them from a repo or ConfigMap); invalid ones are
    /// logged with their located errors and never acted on.
    Run {
        #[command(flatten)]
        options: Box<run::RunOptions>,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Show a policy's rollout on the cluster: phase, step, weights, last verdict with numbers.
    Status {
        /// A policy file or `namespace/name` of a RolloutPolicy; none: every RolloutPolicy.
        policy: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Start a pending rollout now, whatever the schedule says.
    Start {
        /// A policy file or `namespace/name` of a RolloutPolicy.
        policy: String,
    },
    /// Skip the remaining steps (and gates) and promote.
    Promote {
        /// A policy file or `namespace/name` of a RolloutPolicy.
        policy: String,
    },
    /// Abort: all traffic back to stable at once.
    Abort {
        /// A policy file or `namespace/name` of a RolloutPolicy.
        policy: String,
        /// Why (shown in status and alerts).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Stop advancing (checks keep running and can still abort).
    Pause {
        /// A policy file or `namespace/name` of a RolloutPolicy.
        policy: String,
    },
    /// Continue a paused rollout.
    Resume {
        /// A policy file or `namespace/name` of a RolloutPolicy.
        policy: String,
    },
    /// Roll out an aborted revision again.
    Retry {
        /// A policy file or `namespace/name` of a RolloutPolicy.
        policy: String,
    },
    /// Replay a policy's analysis on historical Prometheus data, as the daemon would have decided.
    ///
    /// From --start, the real engine is fed one observation per analysis interval (no cluster
    /// is touched; the weights are what the data shows) until it promotes or aborts or the data
    /// ends. Prints a table per interval with every check's verdict and evidence, then the
    /// decision. Exit 0; 1 on abort with --fail-on-abort; 2 when Prometheus cannot be reached.
    Backtest {
        /// The policy file.
        policy: PathBuf,
        /// Prometheus base URL.
        #[arg(long, env = "CANARYD_PROMETHEUS_URL")]
        prometheus: String,
        /// File holding a bearer token for Prometheus.
        #[arg(long)]
        prometheus_token_file: Option<PathBuf>,
        /// When the canary revision appeared (RFC 3339).
        #[arg(long)]
        start: String,
        /// End of the replay (RFC 3339). Default: now.
        #[arg(long)]
        end: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
        /// Also draw canary vs baseline error rate and p99 latency, with weights and decision, to this SVG file.
        #[arg(long)]
        chart: Option<PathBuf>,
        /// Exit 1 when the replayed rollout aborts.
        #[arg(long)]
        fail_on_abort: bool,
    },
    /// Print the JSON Schema of policy files (for yaml-language-server / editors).
    Schema,
    /// Print the RolloutPolicy CustomResourceDefinition (deploy/crd.yaml is generated from it).
    Crdgen,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
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
        #[cfg(feature = "demo")]
        Commands::Demo(args) => demo::run(args),
        Commands::Run { options, log_format } => {
            init_logs(log_format);
            run::run(*options)
        }
        Commands::Status { policy, format } => match policy {
            Some(p) => cluster::status(&p, format == Format::Json),
            None => cluster::status_all(format == Format::Json),
        },
        Commands::Start { policy } => cluster::command(&policy, "start", None),
        Commands::Promote { policy } => cluster::command(&policy, "promote", None),
        Commands::Abort { policy, reason } => cluster::command(&policy, "abort", reason.as_deref()),
        Commands::Pause { policy } => cluster::command(&policy, "pause", None),
        Commands::Resume { policy } => cluster::command(&policy, "resume", None),
        Commands::Retry { policy } => cluster::command(&policy, "retry", None),
        Commands::Backtest {
            policy,
            prometheus,
            prometheus_token_file,
            start,
            end,
            format,
            chart,
            fail_on_abort,
        } => backtest::run(&backtest::Args {
            policy: &policy,
            prometheus: &prometheus,
            token_file: prometheus_token_file.as_deref(),
            start: &start,
            end: end.as_deref(),
            format,
            chart: chart.as_ref(),
            fail_on_abort,
        }),
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

fn init_logs(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "canaryd=info".into());
    // Colour only for a person at a terminal: `kubectl logs` and log shippers get plain text.
    use std::io::IsTerminal as _;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
