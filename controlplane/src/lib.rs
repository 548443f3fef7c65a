//! A real Kubernetes control plane (etcd + kube-apiserver) on loopback, for tests, the demo and the
//! benchmark.
//!
//! The binaries come from `make tools` (built from the published Go modules). Everything else — TLS
//! material, an admin client certificate, the service-account signing key, data directories and
//! ports — is made here, per instance, so several control planes can run side by side.
#![forbid(unsafe_code)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

/// Environment variable through which a supervising `controlplane run` hands its kubeconfig to tests.
pub const KUBECONFIG_ENV: &str = "ROOTKEY_TEST_KUBECONFIG";

/// Where to find `etcd` and `kube-apiserver`: `$ROOTKEY_TOOLS_BIN`, else `$KUBEBUILDER_ASSETS`, else
/// the nearest `bin/` holding `etcd` above the working directory. Looked up at run time, not build
/// time: the build cache is shared by checkouts in other directories.
pub fn default_bin_dir() -> PathBuf {
    std::env::var_os("ROOTKEY_TOOLS_BIN")
        .or_else(|| std::env::var_os("KUBEBUILDER_ASSETS"))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cwd = std::env::current_dir().unwrap_or_default();
            cwd.ancestors().map(|d| d.join("bin")).find(|b| b.join("etcd").exists()).unwrap_or_else(|| cwd.join("bin"))
        })
}

/// A running etcd + kube-apiserver pair. Dropping it stops both.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    bin_dir: PathBuf,
    etcd: Option<Child>,
    etcd_port: u16,
    etcd_peer_port: u16,
    apiserver: Option<Child>,
    apiserver_port: u16,
    kubeconfig: PathBuf,
    audit: Option<Audit>,
}

/// The API server's audit log: its policy file and where it writes the events (JSON lines).
#[derive(Clone, Debug)]
pub struct Audit {
    pub policy: PathBuf,
    pub log: PathBuf,
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver from `bin_dir` and waits until the API server is ready.
    pub async fn start(bin_dir: &Path) -> anyhow::Result<Self> {
        Self::start_audited(bin_dir, None).await
    }

    /// [`Self::start`], with the API server writing an audit log when `audit` is given.
    pub async fn start_audited(bin_dir: &Path, audit: Option<Audit>) -> anyhow::Result<Self> {
        for tool in ["etcd", "kube-apiserver"] {
            if !bin_dir.join(tool).is_file() {
                bail!("{tool} not found in {}; run `make tools` first", bin_dir.display());
            }
        }
        let dir = tempfile::Builder::new().prefix("rootkey-controlplane-").tempdir()?;
        write_pki(dir.path())?;
        let apiserver_port = free_port()?;
        let mut cp = Self {
            kubeconfig: dir.path().join("kubeconfig"),
            dir,
            bin_dir: bin_dir.to_owned(),
            etcd: None,
            etcd_port: free_port()?,
            etcd_peer_port: free_port()?,
            apiserver: None,
            apiserver_port,
            audit,
        };
        for attempt in 1.. {
            std::fs::write(&cp.kubeconfig, cp.kubeconfig_yaml())?;
            cp.start_etcd()?;
            cp.start_apiserver()?;
            match cp.wait_ready(Duration::from_secs(90)).await {
                Ok(()) => break,
                // A port found free can be taken before the server binds it (any outgoing
                // connection's ephemeral port may land on it): start over on new ports.
                Err(_) if attempt < 3 && cp.lost_port_race() => cp.move_to_new_ports()?,
                Err(e) => return Err(e),
            }
        }
        cp.allow_issuer_discovery().await?;
        Ok(cp)
    }

    /// Lets anyone read the service-account issuer's OpenID configuration and keys, as a cluster
    /// whose tokens Entra ID trusts must (Kubernetes docs, "Service account issuer discovery":
    /// bind `system:service-account-issuer-discovery` to `system:unauthenticated`), so the
    /// sandbox's Entra ID can check a workload identity's token like the real one.
    async fn allow_issuer_discovery(&self) -> anyhow::Result<()> {
        use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
        let binding: ClusterRoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "service-account-issuer-discovery-unauthenticated"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:service-account-issuer-discovery"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:unauthenticated"}],
        }))?;
        let api: kube::Api<ClusterRoleBinding> = kube::Api::all(self.client().await?);
        let params = kube::api::PatchParams::apply("controlplane").force();
        api.patch("service-account-issuer-discovery-unauthenticated", &params, &kube::api::Patch::Apply(&binding))
            .await?;
        Ok(())
    }

    fn lost_port_race(&self) -> bool {
        ["etcd.log", "kube-apiserver.log"].iter().any(|log| {
            std::fs::read_to_string(self.dir.path().join(log)).is_ok_and(|text| text.contains("address already in use"))
        })
    }

    /// Stops both servers, forgets etcd's data (its member record names the old ports) and the
    /// logs, and picks new ports.
    fn move_to_new_ports(&mut self) -> anyhow::Result<()> {
        stop(&mut self.apiserver);
        stop(&mut self.etcd);
        for stale in ["etcd-data", "etcd.log", "kube-apiserver.log"] {
            let path = self.dir.path().join(stale);
            let _ = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        }
        self.apiserver_port = free_port()?;
        self.etcd_port = free_port()?;
        self.etcd_peer_port = free_port()?;
        Ok(())
    }

    /// Path of an admin kubeconfig for this control plane.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    /// Directory holding data, PKI and the logs `etcd.log` and `kube-apiserver.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// An admin client.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_for(&self.kubeconfig).await
    }

    /// Stops the API server (as in an outage); [`Self::start_apiserver`] brings it back.
    pub fn stop_apiserver(&mut self) {
        stop(&mut self.apiserver);
    }

    /// Stops etcd; [`Self::start_etcd`] brings it back with the same data.
    pub fn stop_etcd(&mut self) {
        stop(&mut self.etcd);
    }

    /// Starts etcd on its fixed ports with this instance's data directory.
    pub fn start_etcd(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path();
        let client = format!("http://127.0.0.1:{}", self.etcd_port);
        let peer = format!("http://127.0.0.1:{}", self.etcd_peer_port);
        let child = self
            .command("etcd", "etcd.log")?
            .args(["--name", "default", "--data-dir"])
            .arg(d.join("etcd-data"))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .arg(format!("--initial-cluster=default={peer}"))
            // Test data is disposable: trade durability for speed.
            .args(["--unsafe-no-fsync", "--quota-backend-bytes=4294967296", "--log-level=warn"])
            .spawn()
            .context("starting etcd")?;
        self.etcd = Some(child);
        Ok(())
    }

    /// Starts kube-apiserver on its fixed port against this instance's etcd.
    pub fn start_apiserver(&mut self) -> anyhow::Result<()> {
        let d = self.dir.path();
        let p = |f: &str| d.join(f).display().to_string();
        let mut command = self.command("kube-apiserver", "kube-apiserver.log")?;
        if let Some(audit) = &self.audit {
            command
                .arg(format!("--audit-policy-file={}", audit.policy.display()))
                .arg(format!("--audit-log-path={}", audit.log.display()))
                .args(["--audit-log-format=json", "--audit-log-mode=blocking"]);
        }
        let child = command
            .arg(format!("--etcd-servers=http://127.0.0.1:{}", self.etcd_port))
            .arg(format!("--secure-port={}", self.apiserver_port))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--cert-dir={}", p("apiserver-certs")))
            .arg(format!("--tls-cert-file={}", p("serving.crt")))
            .arg(format!("--tls-private-key-file={}", p("serving.key")))
            .arg(format!("--client-ca-file={}", p("ca.crt")))
            .arg(format!("--service-account-key-file={}", p("sa.pub")))
            .arg(format!("--service-account-signing-key-file={}", p("sa.key")))
            // The issuer is this API server itself, so its OpenID configuration and keys can be
            // fetched on loopback (federated workload identity is checked against them).
            .arg(format!("--service-account-issuer={}", self.url()))
            .arg(format!("--service-account-jwks-uri={}/openid/v1/jwks", self.url()))
            .args(["--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true"])
            .args(["--authorization-mode=RBAC", "--v=1"])
            // A loopback advertise address is refused by the endpoint reconciler; tests need none.
            .arg("--endpoint-reconciler-type=none")
            .spawn()
            .context("starting kube-apiserver")?;
        self.apiserver = Some(child);
        Ok(())
    }

    /// Waits until `/readyz` answers `ok`, failing with the API server's log tail on timeout.
    pub async fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last_error = String::new();
        while Instant::now() < deadline {
            let exited = [("etcd", &mut self.etcd), ("kube-apiserver", &mut self.apiserver)].into_iter().find_map(
                |(name, child)| {
                    child.as_mut()?.try_wait().ok().flatten().map(|status| format!("{name} exited with {status}"))
                },
            );
            if let Some(exited) = exited {
                return Err(self.failure(timeout, &exited));
            }
            match self.readyz().await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last_error = body,
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(self.failure(timeout, &last_error))
    }

    fn failure(&self, timeout: Duration, last_error: &str) -> anyhow::Error {
        let mut tails = String::new();
        for log in ["etcd.log", "kube-apiserver.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            tails.push_str(&format!(
                "\n--- {log} (last lines)\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        anyhow::anyhow!("control plane not ready within {timeout:?}: {last_error}{tails}")
    }

    async fn readyz(&self) -> anyhow::Result<String> {
        let client = self.client().await?;
        let request = http::Request::get("/readyz").body(Vec::new())?;
        Ok(client.request_text(request).await?)
    }

    fn command(&self, tool: &str, log: &str) -> anyhow::Result<Command> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join(log))?;
        let mut cmd = Command::new(self.bin_dir.join(tool));
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        Ok(cmd)
    }

    fn kubeconfig_yaml(&self) -> String {
        let d = self.dir.path().display();
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {url}\n    certificate-authority: {d}/ca.crt\nusers:\n- name: admin\n  user:\n    client-certificate: {d}/admin.crt\n    client-key: {d}/admin.key\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: admin\ncurrent-context: local\n",
            url = self.url()
        )
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        stop(&mut self.apiserver);
        stop(&mut self.etcd);
    }
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// An admin client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}

/// The kubeconfig that a supervising `controlplane run` exported, for tests.
pub fn kubeconfig_from_env() -> anyhow::Result<PathBuf> {
    std::env::var_os(KUBECONFIG_ENV).map(PathBuf::from).with_context(|| {
        format!("{KUBECONFIG_ENV} is not set: run the tests with `make test`, which starts a control plane for them")
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Writes a CA, the API server's serving certificate, an admin (system:masters) client certificate
/// and the service-account signing key pair.
fn write_pki(dir: &Path) -> anyhow::Result<()> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, "rootkey-test-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca = Issuer::new(ca_params, ca_key);
    std::fs::write(dir.join("ca.crt"), ca_cert.pem())?;

    let serving_key = KeyPair::generate()?;
    let mut serving = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "kubernetes.default.svc".to_owned(),
    ])?;
    serving.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    std::fs::write(dir.join("serving.crt"), serving.signed_by(&serving_key, &ca)?.pem())?;
    std::fs::write(dir.join("serving.key"), serving_key.serialize_pem())?;

    let admin_key = KeyPair::generate()?;
    let mut admin = CertificateParams::new(Vec::<String>::new())?;
    admin.distinguished_name.push(DnType::CommonName, "admin");
    admin.distinguished_name.push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    std::fs::write(dir.join("admin.crt"), admin.signed_by(&admin_key, &ca)?.pem())?;
    std::fs::write(dir.join("admin.key"), admin_key.serialize_pem())?;

    let sa_key = KeyPair::generate()?;
    std::fs::write(dir.join("sa.key"), sa_key.serialize_pem())?;
    std::fs::write(dir.join("sa.pub"), sa_key.public_key_pem())?;
    Ok(())
}
