//! `canaryd run`: the daemon's flags and wiring (Prometheus, the cluster, alert channels, leader
//! election, /metrics); the loop itself is `daemon::run_loop`.

use crate::alert::egress::{parse_range, IpNet};
use crate::alert::{
    Deliverer, DelivererConfig, EgressClient, EgressPolicy, Mailer, RenderOptions, RetryPolicy, SmtpConfig,
    SmtpTls, WebhookSender,
};
use crate::daemon::cache::Caches;
use crate::daemon::leader::LeaderElector;
use crate::daemon::metrics::DaemonMetrics;
use crate::daemon::run_loop::{PolicySource, RunLoop};
use crate::daemon::{DaemonEffects, Driver, KubeSecretStore, NamespaceScope};
use crate::prometheus::{PrometheusClient, PrometheusConfig, Secret};
use std::path::PathBuf;
use std::sync::Arc;

/// Everything `canaryd run` is told on its command line.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunOptions {
    /// Directory of policy files (re-read every cycle; mount it from a repo or ConfigMap).
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// Also act on RolloutPolicy custom resources (cluster-wide, or in --namespace).
    #[arg(long)]
    pub crds: bool,
    /// Manage only these namespaces (repeat, or comma-separate): RolloutPolicies are listed
    /// there, policy files for other namespaces are refused, and no Secret elsewhere is read.
    /// Pair with the namespaced RBAC of deploy/namespaced. Default: every namespace.
    #[arg(long = "namespace", value_name = "NS[,NS…]", env = "CANARYD_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
    /// Prometheus base URL.
    #[arg(long, env = "CANARYD_PROMETHEUS_URL")]
    pub prometheus: String,
    /// File holding a bearer token for Prometheus.
    #[arg(long)]
    pub prometheus_token_file: Option<PathBuf>,
    /// Prometheus UI base URL for graph links in alerts.
    #[arg(long, env = "CANARYD_PROMETHEUS_LINK")]
    pub prometheus_link: Option<String>,
    /// SMTP server for email alerts.
    #[arg(long, env = "CANARYD_SMTP_HOST")]
    pub smtp_host: Option<String>,
    #[arg(long, env = "CANARYD_SMTP_PORT", default_value_t = 587)]
    pub smtp_port: u16,
    /// `starttls` (default), `implicit`, or `none` (loopback relays only).
    #[arg(long, default_value = "starttls")]
    pub smtp_tls: String,
    #[arg(long, env = "CANARYD_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// File holding the SMTP password (or set CANARYD_SMTP_PASSWORD).
    #[arg(long)]
    pub smtp_password_file: Option<PathBuf>,
    /// Sender address of alert emails.
    #[arg(long, env = "CANARYD_MAIL_FROM", default_value = "canaryd <canaryd@localhost>")]
    pub mail_from: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_addr: std::net::SocketAddr,
    /// Act only while holding the Lease `canaryd-leader` (run two replicas).
    #[arg(long)]
    pub leader_election: bool,
    #[arg(long, env = "POD_NAMESPACE", default_value = "canaryd-system")]
    pub lease_namespace: String,
    /// Reconcile once and exit.
    #[arg(long)]
    pub once: bool,
    /// Also refuse gate and webhook connections to this range (CIDR or one address; repeatable
    /// or comma-separated). Always refused unless allowed: loopback, link-local (cloud
    /// metadata 169.254.169.254), unspecified and cloud metadata addresses — policy authors
    /// choose these URLs, and canaryd fetches them from its own network position.
    #[arg(long, env = "CANARYD_EGRESS_DENY", value_name = "CIDR", value_delimiter = ',', value_parser = parse_range)]
    pub egress_deny: Vec<IpNet>,
    /// Allow gate and webhook connections to this blocked range (CIDR or one address;
    /// repeatable or comma-separated), e.g. 127.0.0.0/8 for a gate beside canaryd. The
    /// narrowest range containing an address decides: 0.0.0.0/0 opens none of the blocked ones.
    #[arg(long, env = "CANARYD_EGRESS_ALLOW", value_name = "CIDR", value_delimiter = ',', value_parser = parse_range)]
    pub egress_allow: Vec<IpNet>,
    // Tenant confinement (issue 14): custom queries of RolloutPolicy resources read only their
    // namespace's series, on this label (see canaryd_core::promql::confine).
    /// Label that carries each series' namespace (kubernetes_sd relabelling's `namespace`);
    /// RolloutPolicy resources' custom queries are confined to their namespace on it.
    #[arg(long, env = "CANARYD_TENANT_LABEL", default_value = "namespace")]
    pub tenant_label: crate::promql::TenantLabel,
    /// Istio's root namespace (istiod's `--meshConfig.rootNamespace`): DestinationRules there
    /// apply to every namespace and are consulted after the policy's and the host's.
    #[arg(
        long,
        env = "CANARYD_ISTIO_ROOT_NAMESPACE",
        default_value = "istio-system",
        value_name = "NAMESPACE"
    )]
    pub istio_root_namespace: String,
    /// Serve the read-only dashboard on this address (off by default). Keep it on loopback
    /// and use `kubectl port-forward`, or put an authenticating ingress in front of it.
    #[arg(long, value_name = "ADDR")]
    pub ui_addr: Option<std::net::SocketAddr>,
    /// The dashboard's external URL; alerts then link to `<URL>/rollouts/<namespace>/<name>`.
    #[arg(long, value_name = "URL", env = "CANARYD_UI_URL")]
    pub ui_url: Option<String>,
}

fn read_secret_file(path: &PathBuf) -> Result<Secret, String> {
    std::fs::read_to_string(path)
        .map(|s| Secret::new(s.trim()))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn deliverer(
    o: &RunOptions,
    client: &kube::Client,
    scope: &NamespaceScope,
    egress: &EgressClient,
) -> Result<Deliverer, String> {
    let mailer = match &o.smtp_host {
        None => None,
        Some(host) => {
            let mut cfg = SmtpConfig::new(host.clone(), o.mail_from.clone());
            cfg.port = o.smtp_port;
            cfg.tls = match o.smtp_tls.as_str() {
                "starttls" => SmtpTls::StartTls,
                "implicit" => SmtpTls::Implicit,
                "none" => SmtpTls::None,
                other => return Err(format!("--smtp-tls {other:?}: use starttls, implicit or none")),
            };
            cfg.username = o.smtp_username.clone();
            cfg.password = match (&o.smtp_password_file, std::env::var("CANARYD_SMTP_PASSWORD")) {
                (Some(p), _) => Some(read_secret_file(p)?),
                (None, Ok(v)) => Some(Secret::new(v)),
                (None, Err(_)) => None,
            };
            Some(Mailer::new(&cfg).map_err(|e| format!("SMTP: {e}"))?)
        }
    };
    Ok(Deliverer::new(DelivererConfig {
        mailer,
        webhooks: WebhookSender::with_client(egress.clone()),
        secrets: Arc::new(KubeSecretStore { client: client.clone(), scope: scope.clone() }),
        render: RenderOptions { prometheus_url: o.prometheus_link.clone(), ui_url: o.ui_url.clone() },
        retry: RetryPolicy::default(),
    }))
}

/// Runs the daemon until SIGTERM / Ctrl-C; returns the exit code.
pub fn run(o: RunOptions) -> i32 {
    if o.policies.is_none() && !o.crds {
        eprintln!("error: nothing to run: give --policies DIR, --crds, or both");
        return 2;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    rt.block_on(async move {
        match daemon(o).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                2
            }
        }
    })
}

async fn daemon(o: RunOptions) -> Result<(), String> {
    let scope = NamespaceScope::from_flags(&o.namespaces)?;
    let mut config = PrometheusConfig::new(o.prometheus.clone());
    if let Some(path) = &o.prometheus_token_file {
        config.bearer_token = Some(read_secret_file(path)?);
    }
    let metrics_source = PrometheusClient::new(config).map_err(|e| format!("Prometheus: {e}"))?;
    let dashboard =
        if o.ui_addr.is_some() { crate::ui::Dashboard::default() } else { crate::ui::Dashboard::off() };
    if let Some(addr) = o.ui_addr {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("--ui-addr {addr}: {e}"))?;
        let (ui, source) = (dashboard.clone(), metrics_source.clone());
        tracing::info!(%addr, "dashboard at http://{addr}/");
        tokio::spawn(async move {
            if let Err(e) = crate::ui::serve(listener, ui, Some(source), "").await {
                tracing::error!(error = %e, "cannot serve the dashboard");
            }
        });
    }
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot reach the cluster: {e}\n  set KUBECONFIG or run inside a cluster"))?;
    let istio = crate::daemon::kube_io::discover_istio_version(&client).await?;
    tracing::info!(version = istio, "talking networking.istio.io/{istio}");
    // Gates and webhooks share one client: blocked destination ranges, no redirects.
    let egress = EgressClient::new(
        std::time::Duration::from_secs(10),
        EgressPolicy::new(&o.egress_deny, &o.egress_allow),
    )?;
    let effects = DaemonEffects::new(
        deliverer(&o, &client, &scope, &egress)?,
        egress,
        Arc::new(KubeSecretStore { client: client.clone(), scope: scope.clone() }),
    );
    let metrics = Arc::new(DaemonMetrics::default());
    if !o.once {
        let (addr, m) = (o.metrics_addr, metrics.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::daemon::metrics::serve(addr, m).await {
                tracing::error!(error = %e, %addr, "cannot serve /metrics");
            }
        });
    }
    let identity =
        std::env::var("POD_NAME").or_else(|_| std::env::var("HOSTNAME")).unwrap_or_else(|_| "canaryd".into());
    let elector = o.leader_election.then(|| {
        Arc::new(LeaderElector::new(client.clone(), &o.lease_namespace, "canaryd-leader", &identity))
    });
    // Watches replace per-policy reads in steady state; `--once` reads the API directly.
    let cache = (!o.once).then(|| Caches::start(&client, &scope, o.crds));
    let mut driver = Driver::new(client.clone(), metrics_source, effects)
        .with_tenant_label(o.tenant_label.clone())
        .with_scope(scope.clone());
    if let Some(c) = &cache {
        driver = driver.with_cache(c.clone());
    }
    if let Some(e) = &elector {
        let e = e.clone();
        driver = driver.with_write_guard(move || e.may_write());
    }
    tracing::info!(identity = %identity, namespaces = %scope, "canaryd running");
    let driver = Arc::new(driver);
    let run = RunLoop {
        driver: driver.clone(),
        client: client.clone(),
        source: PolicySource { dir: o.policies.clone(), crds: o.crds },
        scope,
        elector: elector.clone(),
        metrics,
        cache,
        once: o.once,
        dashboard,
    };
    let result = run.run(shutdown_signal()).await;
    if o.once {
        // Alerts decided in this cycle go out before the process ends.
        driver.effects.drain(std::time::Duration::from_secs(60)).await;
    }
    if let Some(e) = &elector {
        e.release().await;
    }
    result
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
