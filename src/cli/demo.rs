//! `canaryd demo`: the whole product on a laptop (built with the default `demo` feature).

use std::path::PathBuf;

use crate::demo::{DemoOptions, Fault};
use crate::engine::Phase;

/// Flags of `canaryd demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Try your own policy (target bookinfo `reviews`, subsets v1/v2) instead of the built-in one.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// What is wrong with release 2.
    #[arg(long, value_enum, default_value_t = Fault::Errors)]
    fault: Fault,
    /// Requests per second on the route.
    #[arg(long, default_value_t = 100.0)]
    rps: f64,
    /// Time compression: simulated seconds per real second.
    #[arg(long, default_value_t = 10.0)]
    speed: f64,
    /// Where abort/promote alert emails are written (mbox).
    #[arg(long, default_value = "canaryd-demo.mbox")]
    mailbox: PathBuf,
    /// Where the dashboard is served while the demo runs (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    ui_addr: std::net::SocketAddr,
    /// Keep serving the dashboard after the demo, until Ctrl-C.
    #[arg(long)]
    keep_serving: bool,
}

/// Runs the demo; 0 when release 1 is promoted and release 2 aborted (or promoted with
/// `--fault none`), 1 for any other outcome, 2 when the sandbox cannot start.
pub(crate) fn run(args: DemoArgs) -> i32 {
    let DemoArgs { policy, fault, rps, speed, mailbox, ui_addr, keep_serving } = args;
    let opts = DemoOptions { policy, fault, rps, speed, mailbox, verbose: true, ui_addr: Some(ui_addr) };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 2;
        }
    };
    match rt.block_on(async {
        let outcome = crate::demo::run(&opts).await;
        if let (true, Ok(crate::demo::DemoOutcome { dashboard_url: Some(url), .. })) =
            (keep_serving, &outcome)
        {
            println!("dashboard still at {url}; Ctrl-C to exit");
            let _ = tokio::signal::ctrl_c().await;
        }
        outcome
    }) {
        Ok(o) if o.first == Phase::Promoted && (o.second == Phase::Aborted || fault == Fault::None) => 0,
        Ok(o) => {
            eprintln!("error: unexpected demo outcome: release 1 {:?}, release 2 {:?}", o.first, o.second);
            1
        }
        Err(e) => {
            eprintln!("error: {e}");
            2
        }
    }
}
