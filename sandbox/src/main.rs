//! `rootkey-sandbox`: run the sandbox from a world file.
#![forbid(unsafe_code)]

use clap::Parser;
use rootkey_sandbox::world::{ApplicationSpec, HsmSpec, KeySpec, RoleAssignmentSpec, TenantSpec};
use rootkey_sandbox::{Sandbox, SandboxConfig, World};
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    name = "rootkey-sandbox",
    about = "Emulates Entra ID, Microsoft Graph, Managed HSM and the Antimatter API on loopback"
)]
struct Args {
    /// World file (YAML).
    #[arg(long)]
    world: Option<PathBuf>,
    /// HTTPS port (0 = random).
    #[arg(long, default_value_t = 8443)]
    port: u16,
    /// Admin (plain HTTP, loopback) port (0 = random).
    #[arg(long, default_value_t = 8444)]
    admin_port: u16,
    /// Where ca.pem and endpoints.json are written.
    #[arg(long, default_value = ".sandbox")]
    state_dir: PathBuf,
    /// Fixed latency added to every request, ms.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Per-HSM rate limits (overrides the world file).
    #[arg(long, value_parser = ["on", "off"])]
    rate_limits: Option<String>,
    /// CA bundle (PEM) trusted when fetching a federated issuer's OpenID configuration and keys
    /// (e.g. the Kubernetes API server's CA, whose service-account tokens are the assertions).
    #[arg(long)]
    issuer_ca: Option<std::path::PathBuf>,
    /// Measure requests/second for key get and wrapkey on one server core, print, and exit.
    #[arg(long)]
    selftest_rps: bool,
}

fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if args.selftest_rps {
        std::process::exit(selftest());
    }
    let Some(world_path) = &args.world else {
        eprintln!("rootkey-sandbox: --world FILE is required");
        std::process::exit(2);
    };
    let world = match World::from_file(world_path) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("rootkey-sandbox: {e}");
            std::process::exit(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rootkey-sandbox: runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async move {
        let cfg = SandboxConfig {
            world,
            port: args.port,
            admin_port: args.admin_port,
            state_dir: Some(args.state_dir.clone()),
            latency_ms: args.latency_ms,
            rate_limits: args.rate_limits.as_deref().map(|r| r == "on"),
            issuer_ca_pem: match args.issuer_ca.as_deref().map(std::fs::read).transpose() {
                Ok(pem) => pem,
                Err(e) => {
                    eprintln!("rootkey-sandbox: --issuer-ca: {e}");
                    return 1;
                }
            },
        };
        let sb = match Sandbox::start(cfg).await {
            Ok(sb) => sb,
            Err(e) => {
                eprintln!("rootkey-sandbox: {e}");
                return 1;
            }
        };
        let ep = sb.endpoints();
        println!("rootkey-sandbox listening on 127.0.0.1 and [::1] port {}", ep.port);
        println!("  entra (authority): {}", ep.authority_url);
        println!("  graph:             {}", ep.graph_url);
        println!("  hsm dns suffix:    {}", ep.hsm_dns_suffix);
        for (name, url) in &ep.hsms {
            println!("  hsm {name}: {url}");
        }
        println!("  antimatter:        {}", ep.antimatter_url);
        println!("  admin:             {}", ep.admin_url);
        println!("  ca:                {}", ep.ca_pem_path);
        println!("  endpoints.json:    {}", sb.state_dir().join("endpoints.json").display());
        wait_for_signal().await;
        println!("rootkey-sandbox: stopping");
        sb.shutdown().await;
        0
    });
    std::process::exit(code);
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

const T: &str = "11111111-1111-4111-8111-111111111111";
const APP: &str = "22222222-2222-4222-8222-222222222222";

fn selftest_world() -> World {
    World {
        tenants: vec![TenantSpec { id: T.into(), name: "bench".into() }],
        applications: vec![ApplicationSpec {
            app_id: APP.into(),
            name: "bench".into(),
            home_tenant: T.into(),
            multi_tenant: false,
            secrets: vec!["bench-secret".into()],
            graph_roles: vec![],
            service_principal_id: None,
            federated_credentials: vec![],
        }],
        hsms: vec![HsmSpec {
            name: "bench-hsm".into(),
            tenant: T.into(),
            location: "sandbox".into(),
            role_assignments: vec![RoleAssignmentSpec {
                role: "Managed HSM Crypto User".into(),
                scope: "/".into(),
                principal_id: None,
                app_id: Some(APP.into()),
                name: None,
            }],
            keys: vec![KeySpec {
                name: "k".into(),
                kty: "oct-HSM".into(),
                key_size: Some(256),
                crv: None,
                key_ops: None,
                tags: Default::default(),
                enabled: true,
                nbf: None,
                exp: None,
                versions: 1,
                deleted: false,
                material_hex: None,
            }],
        }],
        ..World::default()
    }
}

/// Server on a single-worker runtime; client on its own thread. Prints req/s.
fn selftest() -> i32 {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return 1;
        }
    };
    let sb = match rt.block_on(Sandbox::start(SandboxConfig { world: selftest_world(), ..SandboxConfig::default() })) {
        Ok(sb) => sb,
        Err(e) => {
            eprintln!("start: {e}");
            return 1;
        }
    };
    let client = sb.client();
    let authority = sb.authority_url();
    let scope = format!("{}/.default", sb.hsm_resource());
    let host = "bench-hsm.managedhsm.sandbox.localhost".to_string();
    let result = std::thread::spawn(move || -> Result<Vec<(String, f64)>, String> {
        let crt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        crt.block_on(async move {
            let tok = client.token(&authority, T, APP, "bench-secret", &scope).await.map_err(|e| e.to_string())?;
            let access = tok.json()["access_token"].as_str().unwrap_or_default().to_string();
            let auth = format!("Bearer {access}");
            let mut out = Vec::new();
            let body = serde_json::json!({"alg": "A256KW", "value": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})
                .to_string();
            for (label, method, path, payload) in [
                ("key.get", "GET", "/keys/k/?api-version=7.5", None),
                ("key.wrap", "POST", "/keys/k//wrapkey?api-version=7.5", Some(body.clone())),
            ] {
                // 4 concurrent keep-alive connections for ~2 s.
                let deadline = Instant::now() + Duration::from_secs(2);
                let mut tasks = Vec::new();
                for _ in 0..4 {
                    let mut conn = client.connect(&host).await.map_err(|e| e.to_string())?;
                    let auth = auth.clone();
                    let payload = payload.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut n = 0u64;
                        while Instant::now() < deadline {
                            let h = [("authorization", auth.as_str()), ("content-type", "application/json")];
                            match conn.send(method, path, &h, payload.clone().map(String::into_bytes)).await {
                                Ok(r) if r.status == 200 => n += 1,
                                _ => break,
                            }
                        }
                        n
                    }));
                }
                let start = Instant::now();
                let mut total = 0;
                for t in tasks {
                    total += t.await.unwrap_or(0);
                }
                out.push((label.to_string(), total as f64 / start.elapsed().as_secs_f64()));
            }
            Ok(out)
        })
    })
    .join();
    rt.block_on(sb.shutdown());
    match result {
        Ok(Ok(rows)) => {
            for (label, rps) in rows {
                println!("selftest {label}: {rps:.0} req/s (server on 1 worker thread, 4 keep-alive TLS connections)");
            }
            0
        }
        Ok(Err(e)) => {
            eprintln!("selftest failed: {e}");
            1
        }
        Err(_) => 1,
    }
}
