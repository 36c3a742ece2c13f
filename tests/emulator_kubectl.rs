//! kubectl fidelity: the installed `kubectl` run against the emulator.

mod emulator_support;

use canaryd::emulator::{Emulator, EmulatorHandle};
use emulator_support::*;

struct Kubectl {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(emu: &EmulatorHandle) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kubeconfig");
        emu.write_kubeconfig(&config).unwrap();
        Kubectl { _dir: dir, config }
    }

    /// Runs kubectl without blocking the runtime the emulator serves on.
    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use tokio::io::AsyncWriteExt;
        let mut cmd = tokio::process::Command::new("kubectl");
        cmd.arg("--kubeconfig").arg(&self.config).args(args);
        cmd.env("HOME", self._dir.path()).env_remove("KUBECONFIG");
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("kubectl is installed");
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).await.unwrap();
        }
        drop(input);
        let out = child.wait_with_output().await.unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

#[tokio::test]
async fn probe() {
    let emu = Emulator::start().await.unwrap();
    emu.apply_yaml(&format!("{BOOKINFO_NS}---{REVIEWS_VS}---{REVIEWS_V2_DEPLOYMENT}")).unwrap();
    let k = Kubectl::new(&emu);
    for args in [
        vec!["get", "virtualservices", "-n", "bookinfo", "-o", "json"],
        vec!["get", "vs", "-n", "bookinfo"],
        vec!["get", "deployments", "-n", "bookinfo"],
        vec![
            "patch",
            "virtualservice",
            "reviews",
            "-n",
            "bookinfo",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/http/0/route/0/weight","value":70},{"op":"replace","path":"/spec/http/0/route/1/weight","value":30}]"#,
        ],
    ] {
        let o = k.run(&args, None).await;
        println!("$ kubectl {}\n[{}]\n{}\n{}", args.join(" "), o.code, o.stdout, o.stderr);
    }
    let o = k.run(&["apply", "-f", "-"], Some(REVIEWS_DR)).await;
    println!("$ apply\n[{}]\n{}\n{}", o.code, o.stdout, o.stderr);
    for r in emu.requests() {
        println!("{} {}?{} {}", r.method, r.path, r.query, r.status);
    }
}
