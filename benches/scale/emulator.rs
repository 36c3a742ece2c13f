//! The emulator process (`CANARYD_SCALE_ROLE=emulator`) and the driver's handle on it. Both
//! ends of the stdin/stdout protocol live here: a `URL <url> <empty RSS KiB>` greeting, then
//! one JSON line of stats per `stats` line, until anything else (or EOF) ends the process.

use crate::fixtures::fixtures;
use crate::measure::{cpu_seconds, status_kib};
use crate::{env_usize, ROLE};
use kube_emulator::{Emulator, EmulatorHandle, RequestRecord};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// Loads the N rollouts' objects, greets, then answers `stats` until told anything else.
pub fn run() {
    let n = env_usize("SCALE_N").expect("SCALE_N");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let emu = rt.block_on(Emulator::start()).expect("emulator starts");
    let empty_kib = status_kib("VmRSS");
    rt.block_on(async {
        for i in 0..n {
            for obj in fixtures(i) {
                emu.apply_value(obj).expect("fixture applies");
            }
        }
    });
    serve(&emu, empty_kib, |log| {
        let mut by_verb: BTreeMap<String, u64> = BTreeMap::new();
        for r in log {
            let what = if r.status >= 400 { format!("{} {}", r.verb, r.status) } else { r.verb.clone() };
            *by_verb.entry(what).or_default() += 1;
        }
        json!({"requests": log.len(), "by_verb": by_verb, "hwm_kib": status_kib("VmHWM")})
    });
}

/// The emulator's end of the protocol, for every emulator role: forgets the requests made so
/// far (loading fixtures), greets, then answers each `stats` line with `summary` of the
/// requests since the last one, plus the process's RSS and CPU, until anything else arrives.
pub fn serve(emu: &EmulatorHandle, empty_kib: u64, summary: impl Fn(&[RequestRecord]) -> Value) {
    emu.clear_requests();
    let mut out = std::io::stdout().lock();
    writeln!(out, "URL {} {empty_kib}", emu.url()).expect("stdout");
    out.flush().expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line.trim() != "stats" {
            break;
        }
        let log = emu.requests();
        emu.clear_requests();
        let mut stats = summary(&log);
        stats["rss_kib"] = json!(status_kib("VmRSS"));
        stats["cpu_s"] = json!(cpu_seconds());
        writeln!(out, "{stats}").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// The driver's end of the emulator process.
pub struct EmulatorProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    pub url: String,
    /// The emulator's RSS right after starting, before the fixtures, KiB.
    pub empty_kib: u64,
}

impl EmulatorProcess {
    pub fn spawn(n: usize) -> Self {
        Self::spawn_role("emulator", n)
    }

    /// An emulator process playing `role` (`emulator`, `watch-emulator`).
    pub fn spawn_role(role: &str, n: usize) -> Self {
        let mut child = Command::new(std::env::current_exe().expect("current exe"))
            .env(ROLE, role)
            .env("SCALE_N", n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("emulator process starts");
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("emulator greets");
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("URL"), "emulator said {line:?}");
        let url = parts.next().expect("url").to_string();
        let empty_kib = parts.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        EmulatorProcess { child, stdin, stdout, url, empty_kib }
    }

    /// Requests served since the last call (by verb), RSS and CPU of the emulator process.
    pub fn stats(&mut self) -> Value {
        writeln!(self.stdin, "stats").expect("emulator stdin");
        self.stdin.flush().expect("emulator stdin");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("emulator answers");
        serde_json::from_str(&line).expect("stats JSON")
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.wait();
    }
}
