//! Runs a real `prometheus` binary on loopback, for tests, `canaryd backtest` tests and the demo.
//!
//! Data comes from backfilled OpenMetrics text (`promtool tsdb create-blocks-from openmetrics`,
//! run before the server starts so the blocks are loaded at startup) and/or from scraping live
//! targets. The server listens on a free port of 127.0.0.1, keeps its data in a fresh temporary
//! directory, and is killed (and the directory removed) on drop.
//!
//! Binaries come from `$CANARYD_PROMETHEUS_BIN` / `$CANARYD_PROMTOOL_BIN` or `PATH`; on Debian
//! the `prometheus` package provides both. Notes on Debian's Prometheus 2.42: its promtool has
//! no `--max-block-duration` flag (blocks are cut at 2 h boundaries), overlapping blocks are
//! allowed, and time-based retention is measured from the newest block, so data from any time
//! can be backfilled (retention is set to 100 y to be safe).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Environment variable naming the `prometheus` binary.
pub const PROMETHEUS_BIN_ENV: &str = "CANARYD_PROMETHEUS_BIN";
/// Environment variable naming the `promtool` binary.
pub const PROMTOOL_BIN_ENV: &str = "CANARYD_PROMTOOL_BIN";
/// How to get the binaries, quoted in errors.
pub const INSTALL_HINT: &str =
    "install Debian's `prometheus` package (apt-get install -y prometheus), which provides `prometheus` and `promtool`, \
     or set CANARYD_PROMETHEUS_BIN / CANARYD_PROMTOOL_BIN";

/// Why a Prometheus server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The binary is not installed.
    #[error("`{binary}` not found: {hint}")]
    NotInstalled { binary: String, hint: &'static str },
    /// A file operation in the data directory failed.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// `promtool tsdb create-blocks-from openmetrics` failed.
    #[error("backfill with promtool failed: {output}")]
    Backfill { output: String },
    /// The server exited or was not ready in time.
    #[error("prometheus did not become ready: {reason}\n--- prometheus log (last lines) ---\n{log}")]
    NotReady { reason: String, log: String },
}

/// A live scrape target for the server's configuration.
#[derive(Debug, Clone)]
pub struct ScrapeTarget {
    /// `job` label of the target's series.
    pub job: String,
    /// `host:port` serving `/metrics`.
    pub address: String,
    /// Scrape interval.
    pub interval: Duration,
}

/// What to start: backfill data and scrape targets.
#[derive(Debug, Clone, Default)]
pub struct PrometheusServerBuilder {
    backfill: Vec<String>,
    scrape: Vec<ScrapeTarget>,
    ready_timeout: Option<Duration>,
    prometheus_bin: Option<PathBuf>,
    promtool_bin: Option<PathBuf>,
}

impl PrometheusServerBuilder {
    /// Adds OpenMetrics text (with `# TYPE` lines, timestamps in seconds, ending in `# EOF`) to
    /// import before the server starts. May be called several times.
    pub fn backfill(mut self, openmetrics: impl Into<String>) -> Self {
        self.backfill.push(openmetrics.into());
        self
    }

    /// Adds a live target to scrape.
    pub fn scrape(mut self, job: impl Into<String>, address: impl Into<String>, interval: Duration) -> Self {
        self.scrape.push(ScrapeTarget { job: job.into(), address: address.into(), interval });
        self
    }

    /// How long to wait for `/-/ready`. Default 60 s (startup on a loaded CI machine is slow).
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = Some(timeout);
        self
    }

    /// Uses these binaries instead of `$CANARYD_PROMETHEUS_BIN` / `$CANARYD_PROMTOOL_BIN` or `PATH`.
    pub fn binaries(mut self, prometheus: impl Into<PathBuf>, promtool: impl Into<PathBuf>) -> Self {
        self.prometheus_bin = Some(prometheus.into());
        self.promtool_bin = Some(promtool.into());
        self
    }

    /// Backfills, starts the server and waits until it is ready.
    pub async fn start(self) -> Result<PrometheusServer, ServerError> {
        let prometheus = match &self.prometheus_bin {
            Some(path) => existing(path)?,
            None => find_binary(PROMETHEUS_BIN_ENV, "prometheus")?,
        };
        let dir = TempDir::new()?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).map_err(io(format!("create {}", data.display())))?;
        if !self.backfill.is_empty() {
            let promtool = match &self.promtool_bin {
                Some(path) => existing(path)?,
                None => find_binary(PROMTOOL_BIN_ENV, "promtool")?,
            };
            for (i, text) in self.backfill.iter().enumerate() {
                backfill_with(&promtool, dir.path(), &data, i, text).await?;
            }
        }
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml(&self.scrape))
            .map_err(io(format!("write {}", config.display())))?;

        // The free port is found by binding and releasing it; another process may take it in
        // between, so a start that fails is retried with a new port.
        let ready_timeout = self.ready_timeout.unwrap_or(Duration::from_secs(60));
        let mut attempts_left = 3;
        loop {
            let port = free_port()?;
            let url = format!("http://127.0.0.1:{port}");
            let log_path = dir.path().join(format!("prometheus-{port}.log"));
            let log =
                std::fs::File::create(&log_path).map_err(io(format!("create {}", log_path.display())))?;
            let log_err = log.try_clone().map_err(io("clone log file".into()))?;
            let mut child = std::process::Command::new(&prometheus)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", data.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--storage.tsdb.retention.time=100y")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err)
                .spawn()
                .map_err(io(format!("start {}", prometheus.display())))?;
            match wait_ready(&mut child, &url, &log_path, ready_timeout).await {
                Ok(()) => return Ok(PrometheusServer { child, url, log_path, dir }),
                Err(e) => {
                    let _ = child.kill();
                    let exited_early =
                        matches!(&e, ServerError::NotReady { reason, .. } if reason.starts_with("exited"));
                    attempts_left -= 1;
                    if !exited_early || attempts_left == 0 {
                        return Err(e);
                    }
                    let _ = child.wait();
                }
            }
        }
    }
}

/// A running Prometheus on loopback. Killed, and its data directory removed, on drop.
#[derive(Debug)]
pub struct PrometheusServer {
    child: std::process::Child,
    url: String,
    log_path: PathBuf,
    dir: TempDir,
}

impl PrometheusServer {
    /// What to start; see [`PrometheusServerBuilder`].
    pub fn builder() -> PrometheusServerBuilder {
        PrometheusServerBuilder::default()
    }

    /// Starts an empty server.
    pub async fn start() -> Result<Self, ServerError> {
        Self::builder().start().await
    }

    /// Starts a server backfilled with OpenMetrics text.
    pub async fn start_with_backfill(openmetrics: impl Into<String>) -> Result<Self, ServerError> {
        Self::builder().backfill(openmetrics).start().await
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The data directory (TSDB).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The server's log so far, for test failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Polls `/-/ready` until it answers 200, the process exits, or `timeout` passes.
async fn wait_ready(
    child: &mut std::process::Child,
    url: &str,
    log_path: &Path,
    timeout: Duration,
) -> Result<(), ServerError> {
    let not_ready = |reason: String| {
        let log = std::fs::read_to_string(log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        ServerError::NotReady { reason, log: tail.into_iter().rev().collect::<Vec<_>>().join("\n") }
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| not_ready(e.to_string()))?;
    let deadline = Instant::now() + timeout;
    let ready = format!("{url}/-/ready");
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(not_ready(format!("exited with {status}")));
        }
        if let Ok(r) = http.get(&ready).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err(not_ready(format!("no 200 from /-/ready within {} s", timeout.as_secs())));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Imports OpenMetrics text into a TSDB directory with promtool (the server must not be
/// running on it). Useful for tools that manage the server themselves.
pub async fn backfill(openmetrics: &str, data_dir: &Path) -> Result<(), ServerError> {
    let promtool = find_binary(PROMTOOL_BIN_ENV, "promtool")?;
    let scratch = TempDir::new()?;
    backfill_with(&promtool, scratch.path(), data_dir, 0, openmetrics).await
}

async fn backfill_with(
    promtool: &Path,
    scratch: &Path,
    data: &Path,
    i: usize,
    text: &str,
) -> Result<(), ServerError> {
    let file = scratch.join(format!("backfill-{i}.om"));
    std::fs::write(&file, text).map_err(io(format!("write {}", file.display())))?;
    let output = tokio::process::Command::new(promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics", "--quiet"])
        .arg(&file)
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io(format!("run {}", promtool.display())))?;
    let _ = std::fs::remove_file(&file);
    if output.status.success() {
        Ok(())
    } else {
        let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stdout));
        Err(ServerError::Backfill { output: format!("{}: {}", output.status, text.trim()) })
    }
}

fn config_yaml(targets: &[ScrapeTarget]) -> String {
    let mut yaml =
        String::from("global:\n  scrape_interval: 10s\n  evaluation_interval: 10s\nscrape_configs:\n");
    if targets.is_empty() {
        yaml.push_str("  []\n");
    }
    for t in targets {
        // Debug formatting quotes and escapes the strings, valid YAML double-quoted scalars.
        yaml.push_str(&format!(
            "  - job_name: {:?}\n    scrape_interval: {}ms\n    static_configs:\n      - targets: [{:?}]\n",
            t.job,
            t.interval.as_millis().max(1),
            t.address
        ));
    }
    yaml
}

fn existing(path: &Path) -> Result<PathBuf, ServerError> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(ServerError::NotInstalled { binary: path.display().to_string(), hint: INSTALL_HINT })
    }
}

fn find_binary(env: &str, name: &str) -> Result<PathBuf, ServerError> {
    if let Some(path) = std::env::var_os(env) {
        return existing(Path::new(&path));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| ServerError::NotInstalled { binary: name.to_string(), hint: INSTALL_HINT })
}

fn free_port() -> Result<u16, ServerError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io("bind a free port".into()))?;
    Ok(listener.local_addr().map_err(io("read the bound port".into()))?.port())
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ServerError {
    move |source| ServerError::Io { what, source }
}

/// A directory under the system temp dir, removed on drop (tempfile is only a dev-dependency,
/// and the demo needs this at run time).
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, ServerError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let name = format!(
            "canaryd-prometheus-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path).map_err(io(format!("create {}", path.display())))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
