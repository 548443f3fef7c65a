//! `controlplane run -- CMD…` starts etcd + kube-apiserver, runs CMD with `KUBECONFIG` (and
//! `ROOTKEY_TEST_KUBECONFIG`) pointing at them, and stops both when CMD exits or a signal arrives;
//! `controlplane up` keeps one running until interrupted; there, SIGHUP restarts the API server
//! (etcd keeps running), which the benchmark uses to measure recovery from an API-server restart.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use controlplane::{Audit, ControlPlane, KUBECONFIG_ENV, default_bin_dir};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Directory with the `etcd` and `kube-apiserver` binaries (default: $ROOTKEY_TOOLS_BIN,
    /// $KUBEBUILDER_ASSETS or the workspace's bin/).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a command against a fresh control plane, then stop it.
    Run {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Start a control plane and keep it until Ctrl-C; optionally copy its kubeconfig to a path.
    /// SIGHUP restarts the API server.
    Up {
        #[arg(long)]
        kubeconfig_out: Option<PathBuf>,
        /// Audit policy file: the API server then writes its audit events to `--audit-log`.
        #[arg(long, requires = "audit_log")]
        audit_policy: Option<PathBuf>,
        /// Where the API server writes its audit events (JSON lines).
        #[arg(long, requires = "audit_policy")]
        audit_log: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bin_dir = cli.bin_dir.unwrap_or_else(default_bin_dir);
    let started = std::time::Instant::now();
    let audit = match &cli.command {
        Cmd::Up { audit_policy: Some(policy), audit_log: Some(log), .. } => {
            Some(Audit { policy: policy.clone(), log: log.clone() })
        }
        _ => None,
    };
    let mut cp = ControlPlane::start_audited(&bin_dir, audit).await?;
    eprintln!(
        "control plane ready at {} in {:.1}s (kubeconfig {})",
        cp.url(),
        started.elapsed().as_secs_f64(),
        cp.kubeconfig_path().display()
    );
    let mut term = signal(SignalKind::terminate())?;
    let code = match cli.command {
        Cmd::Run { command } => {
            let mut child = tokio::process::Command::new(&command[0])
                .args(&command[1..])
                .env("KUBECONFIG", cp.kubeconfig_path())
                .env(KUBECONFIG_ENV, cp.kubeconfig_path())
                .kill_on_drop(true)
                .spawn()?;
            tokio::select! {
                status = child.wait() => status?.code().unwrap_or(1),
                _ = tokio::signal::ctrl_c() => 130,
                _ = term.recv() => 143,
            }
        }
        Cmd::Up { kubeconfig_out, .. } => {
            if let Some(out) = kubeconfig_out {
                std::fs::copy(cp.kubeconfig_path(), &out)?;
                eprintln!("kubeconfig copied to {}", out.display());
            }
            let mut hup = signal(SignalKind::hangup())?;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    _ = term.recv() => break,
                    _ = hup.recv() => {
                        cp.stop_apiserver();
                        eprintln!("API server stopped (SIGHUP); restarting it");
                        cp.start_apiserver()?;
                        cp.wait_ready(std::time::Duration::from_secs(90)).await?;
                        eprintln!("API server back");
                    }
                }
            }
            0
        }
    };
    drop(cp);
    std::process::exit(code);
}
