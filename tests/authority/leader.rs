//! Leader election that cannot produce two writers: a leader whose Lease renewal stalls (its
//! connection to the API server goes silent, nothing is refused) stops before a standby, which
//! reaches the API server directly, takes the lease over.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use rootkey_operator::leader::{LEASE_DURATION, RENEW_EVERY};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::support::{
    checks,
    env::{Env, OperatorOptions, SpawnExtra},
};

/// A loopback TCP proxy to the API server that forwards until told to stall; then it keeps every
/// connection open and forwards nothing more, in either direction.
struct StallingProxy {
    addr: SocketAddr,
    stalled: Arc<AtomicBool>,
}

impl StallingProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stalled = Arc::new(AtomicBool::new(false));
        let flag = stalled.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(pipe(client_read, server_write, flag.clone()));
                tokio::spawn(pipe(server_read, client_write, flag.clone()));
            }
        });
        Self { addr, stalled }
    }

    fn stall(&self) {
        self.stalled.store(true, Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: Arc<AtomicBool>,
) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let Ok(n) = from.read(&mut buf).await else { return };
        if n == 0 {
            return;
        }
        while stalled.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn test_kubeconfig() -> serde_yaml::Value {
    let path = controlplane::kubeconfig_from_env().expect("test control plane");
    serde_yaml::from_str(&std::fs::read_to_string(&path).expect("kubeconfig")).expect("yaml")
}

/// The address of the API server that `config` names.
fn api_server(config: &serde_yaml::Value) -> SocketAddr {
    let server = config["clusters"][0]["cluster"]["server"].as_str().expect("server");
    let url = url::Url::parse(server).expect("server URL");
    url.socket_addrs(|| None).expect("server address").into_iter().next().expect("an address")
}

/// Writes `config` with its API server replaced by `proxy` to `path`. The proxy is on loopback like
/// the API server, so the serving certificate still matches.
fn write_through(mut config: serde_yaml::Value, proxy: SocketAddr, path: &Path) {
    config["clusters"][0]["cluster"]["server"] = serde_yaml::Value::from(format!("https://{proxy}"));
    std::fs::write(path, serde_yaml::to_string(&config).expect("yaml")).expect("write kubeconfig");
}

#[tokio::test]
async fn a_stalled_lease_renewal_never_yields_two_leaders() {
    let mut env = Env::without_operator("auth-leader").await;
    let config = test_kubeconfig();
    let proxy = StallingProxy::start(api_server(&config)).await;
    let kubeconfig = env.log_dir.join(format!("{}-proxied-kubeconfig.yaml", env.ns));
    write_through(config, proxy.addr, &kubeconfig);
    let elect = OperatorOptions { leader_elect: true, ..Default::default() };
    let through_proxy = SpawnExtra {
        env: vec![("KUBECONFIG".into(), kubeconfig.to_string_lossy().into_owned())],
        ..Default::default()
    };
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), &env.ns);
    let holder =
        async || leases.get_opt("rootkey-operator").await.expect("lease").and_then(|l| l.spec?.holder_identity);

    let first = env.spawn_operator_ext(&elect, &through_proxy);
    let started = Instant::now();
    while holder().await.as_deref() != Some("operator-0") {
        assert!(started.elapsed() < Duration::from_secs(30), "the proxied operator never led");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = env.spawn_operator_ext(&elect, &SpawnExtra::default());
    let objs = checks::populate(&env, 2).await;
    checks::apply_all(&env, &objs).await;
    checks::wait_all_ready(&env, &objs, Duration::from_secs(60)).await.expect("Ready under the proxied leader");
    assert_eq!(holder().await.as_deref(), Some("operator-0"));

    // From here the leader's Lease calls (and everything else it sends the API server) hang.
    proxy.stall();
    let stalled = Instant::now();
    let mut leader_exited = None;
    let took_over = loop {
        if leader_exited.is_none() && env.operator_exited(first).is_some() {
            leader_exited = Some(stalled.elapsed());
        }
        if holder().await.as_deref() == Some("operator-1") {
            break stalled.elapsed();
        }
        assert!(stalled.elapsed() < Duration::from_secs(60), "the standby never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("stalled leader exited after {leader_exited:?}; the standby took over after {took_over:?}");
    let exited = leader_exited.unwrap_or_else(|| {
        panic!("two leaders: the stalled one was still running when the standby took over after {took_over:?}")
    });
    assert!(exited < took_over, "the stalled leader exited after the takeover");
    // Its last renewal was at most RENEW_EVERY before the stall: its lease lapses no sooner than this.
    let lapses = LEASE_DURATION - RENEW_EVERY;
    assert!(exited < lapses, "the stalled leader ran on for {exited:?}, past the earliest lapse of its lease");
    assert!(env.operator_exited(second).is_none(), "the new leader runs");
}
