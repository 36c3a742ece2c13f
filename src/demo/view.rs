//! The demo's terminal view: one line per analysis interval with the step, weights, canary vs
//! baseline numbers and the verdict; plain lines, coloured only on a TTY.

use super::DemoOptions;
use crate::daemon::CycleReport;
use crate::engine::{Action, Phase};
use crate::policy::Policy;
use jiff::Timestamp;
use std::io::IsTerminal;
use std::path::Path;

pub(crate) struct View {
    verbose: bool,
    color: bool,
    steps: usize,
}

impl View {
    pub fn new(verbose: bool, policy: &Policy) -> Self {
        View { verbose, color: verbose && std::io::stdout().is_terminal(), steps: policy.spec().steps.len() }
    }

    fn paint(&self, code: &str, s: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }

    pub fn banner(&self, policy: &Policy, opts: &DemoOptions) {
        if !self.verbose {
            return;
        }
        println!(
            "canaryd demo: policy {} on an in-process Kubernetes API (VirtualService {}), simulated mesh at {} req/s, time x{}",
            policy.key(),
            policy.spec().target.virtual_service,
            opts.rps,
            opts.speed
        );
    }

    pub fn release(&self, title: &str) {
        if self.verbose {
            println!("\n{}", self.paint("1", &format!("== {title}")));
        }
    }

    pub fn note(&self, msg: &str) {
        if self.verbose {
            println!("   {msg}");
        }
    }

    pub fn cycle(&mut self, now: Timestamp, r: &CycleReport) {
        if !self.verbose {
            return;
        }
        let s = &r.state;
        let t = now.strftime("%H:%M:%S");
        for a in &r.actions {
            if let Action::Record { reason, message } = a {
                let colour = match *reason {
                    "Aborted" => "31;1",
                    "Promoted" => "32;1",
                    _ => "36",
                };
                println!("{t} {}", self.paint(colour, &format!("{reason}: {message}")));
            }
        }
        if !matches!(s.phase, Phase::Progressing | Phase::Paused) {
            return;
        }
        let w = s.traffic.canary_weight as usize;
        let bar = format!("{}{}", "█".repeat(w / 5), "░".repeat(20 - w / 5));
        let Some(v) = &s.last_verdict else { return };
        let fmt = |name: &str| v.checks.iter().find(|c| c.check == name).map(|c| c.evidence.clone());
        let sr = fmt("success-rate").map(|e| {
            format!(
                "errors canary {:.2}% vs baseline {:.2}%",
                e.canary_value.unwrap_or(0.0) * 100.0,
                e.baseline_value.unwrap_or(0.0) * 100.0
            )
        });
        let lat = fmt("latency").map(|e| {
            format!(
                "p99 {:.0} vs {:.0} ms",
                e.canary_value.unwrap_or(f64::NAN),
                e.baseline_value.unwrap_or(f64::NAN)
            )
        });
        let verdict = match v.verdict.as_str() {
            "pass" => self.paint("32", "pass"),
            "fail" => self.paint("31;1", "FAIL"),
            other => self.paint("33", other),
        };
        println!(
            "{t} step {}/{} {bar} {:>3}%  {}  {}  verdict {verdict}",
            s.step + 1,
            self.steps,
            w,
            sr.unwrap_or_default(),
            lat.unwrap_or_default()
        );
    }

    pub fn finish(&self, first: Phase, second: Phase, path: &Path, mailbox: &str) {
        if !self.verbose {
            return;
        }
        println!("\nrelease 1: {}   release 2: {}", first.as_str(), second.as_str());
        if !mailbox.is_empty() {
            println!("\nalerts written to {}:\n", path.display());
            for line in mailbox.lines() {
                println!("  {line}");
            }
        }
        println!(
            "What you saw: the daemon's real reconcile loop wrote weights into the VirtualService through the\n\
             Kubernetes API, judged each interval against the baseline, promoted a healthy release and\n\
             aborted a faulty one. Against a cluster: `kubectl apply -k deploy/` and commit the policy."
        );
    }
}
