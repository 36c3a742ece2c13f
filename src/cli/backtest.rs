//! `canaryd backtest POLICY --prometheus URL --start TIME [--end TIME]`: replays the policy's
//! analysis on historical Prometheus data and prints what the daemon would have decided.

use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::output::Format;
use super::plan::load;
use crate::backtest::{self, BacktestError, Decision};
use crate::prometheus::{PrometheusClient, PrometheusConfig, Secret};

/// Options of the command, as parsed by clap.
pub(crate) struct Args<'a> {
    pub policy: &'a Path,
    pub prometheus: &'a str,
    pub token_file: Option<&'a Path>,
    pub start: &'a str,
    pub end: Option<&'a str>,
    pub format: Format,
    pub chart: Option<&'a PathBuf>,
    pub fail_on_abort: bool,
}

/// Runs the command; returns the exit code (0, 1 on abort with `--fail-on-abort`, 2 on usage or
/// environment errors).
pub fn run(args: &Args<'_>) -> i32 {
    let parse = |flag: &str, v: &str| -> Result<Timestamp, i32> {
        v.parse().map_err(|e| {
            eprintln!("error: {flag} {v}: {e}\n  give an RFC 3339 time such as 2026-11-23T01:00:00Z");
            2
        })
    };
    let start = match parse("--start", args.start) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let end = match args.end.map(|e| parse("--end", e)).transpose() {
        Ok(t) => t.unwrap_or_else(Timestamp::now),
        Err(code) => return code,
    };
    let policy = match load(args.policy) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let mut config = PrometheusConfig::new(args.prometheus);
    if let Some(path) = args.token_file {
        match std::fs::read_to_string(path) {
            Ok(t) => config.bearer_token = Some(Secret::new(t.trim())),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", path.display());
                return 2;
            }
        }
    }
    let client = match PrometheusClient::new(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    let result = match rt.block_on(backtest::run(&policy, &client, start, end)) {
        Ok(r) => r,
        Err(e @ BacktestError::EmptyRange { .. }) => {
            eprintln!("error: {e}\n  --end must be after --start");
            return 2;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    if let Some(path) = args.chart {
        if let Err(e) = std::fs::write(path, backtest::svg(&result)) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return 2;
        }
    }
    match args.format {
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&backtest::json(&result)).unwrap_or_default())
        }
        Format::Human => print!("{}", backtest::human(&result)),
    }
    if args.fail_on_abort && result.decision == Decision::Abort {
        1
    } else {
        0
    }
}
