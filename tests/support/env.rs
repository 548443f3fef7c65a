//! An end-to-end environment: the sandbox (in process), a namespace on the test control plane, and
//! the operator as its own process, configured exactly as against Azure but for endpoints, CA and
//! credentials.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams},
};
use rootkey_operator::api::{AzureRootKey, Condition, ConditionStatus};
use rootkey_sandbox::{Sandbox, SandboxConfig, SandboxHandle, world::World};
use serde_json::{Value, json};

pub const TENANT: &str = "7b0e4c2a-5d1f-4e8a-9c3b-2f6a1d8e4c10";
pub const OPERATOR_CLIENT: &str = "3f2b8c1d-9e4a-4b7c-a6d5-1e8f2c3b4a50";
pub const OPERATOR_SECRET: &str = "fake-operator-secret-not-real";
pub const NO_ROLES_CLIENT: &str = "6e5d4c3b-2a1f-4e9d-8c7b-5a4f3e2d1c80";
pub const NO_ROLES_SECRET: &str = "fake-noroles-secret-not-real";
pub const ANTIMATTER_APP: &str = "8d4e2f1a-7c3b-4e5d-b9a8-6f2e1d4c3b70";
pub const DOMAIN: &str = "dm-7fQ2xPz9KdL";
pub const API_KEY: &str = "fake-antimatter-api-key-not-real";
pub const HSM: &str = "contoso-hsm";
/// Every secret value the tests hand the operator; none may appear in anything it emits.
pub const SECRETS: [&str; 3] = [OPERATOR_SECRET, NO_ROLES_SECRET, API_KEY];

pub struct Env {
    pub sandbox: SandboxHandle,
    pub client: Client,
    pub ns: String,
    pub api: Api<AzureRootKey>,
    operators: Vec<Child>,
    pub log_dir: PathBuf,
    /// Added by `spawn_operator_ext`: per operator index, its metrics and probe ports.
    extra: std::collections::BTreeMap<usize, SpawnedPorts>,
    /// Kubeconfig handed to operators started by `spawn_operator_ext` (None: the inherited one).
    kubeconfig: Option<PathBuf>,
}

/// Ports of an operator started by [`Env::spawn_operator_ext`].
#[derive(Clone, Copy, Debug)]
pub struct SpawnedPorts {
    pub metrics: u16,
    pub probe: u16,
}

/// Extra settings for [`Env::spawn_operator_ext`].
#[derive(Default, Clone)]
pub struct SpawnExtra {
    /// More command-line arguments.
    pub args: Vec<String>,
    /// More environment variables (override the defaults).
    pub env: Vec<(String, String)>,
}

#[derive(Default)]
pub struct OperatorOptions {
    pub policy: Option<&'static str>,
    pub leader_elect: bool,
    /// Leave `--antimatter-application-id` unset, so Antimatter's application is asked from its API.
    pub ask_antimatter_for_application: bool,
    /// `--cluster-id` (default `test-cluster`): another value plays another cluster's operator.
    pub cluster_id: Option<&'static str>,
}

impl Env {
    /// Sandbox + namespace + one operator.
    pub async fn start(prefix: &str) -> Self {
        Self::start_with(prefix, OperatorOptions::default()).await
    }

    pub async fn start_with(prefix: &str, options: OperatorOptions) -> Self {
        let mut env = Self::without_operator(prefix).await;
        env.spawn_operator(&options);
        env
    }

    pub async fn without_operator(prefix: &str) -> Self {
        Self::with_world(prefix, |_, _| {}).await
    }

    /// The default world, changed by `adjust(world, namespace)` before the sandbox starts.
    pub async fn with_world(prefix: &str, adjust: impl FnOnce(&mut World, &str)) -> Self {
        let client = super::client().await;
        super::install_crd(&client).await;
        let ns = super::namespace(&client, prefix).await;
        let mut world = World::from_file("deploy/sandbox/world.yaml").expect("world");
        adjust(&mut world, &ns);
        let (_, issuer_ca) = super::test_issuer();
        let config = SandboxConfig { world, issuer_ca_pem: Some(issuer_ca), ..Default::default() };
        let sandbox = Sandbox::start(config).await.expect("sandbox");
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-logs");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let api = Api::namespaced(client.clone(), &ns);
        Self { sandbox, client, ns, api, operators: Vec::new(), log_dir, extra: Default::default(), kubeconfig: None }
    }

    /// Like [`Self::without_operator`], but on the control plane behind `kubeconfig` (e.g. one the
    /// test owns and restarts). Installs the CRD there; operators started with
    /// [`Self::spawn_operator_ext`] get `KUBECONFIG=kubeconfig`.
    pub async fn on_control_plane(kubeconfig: &std::path::Path, prefix: &str) -> Self {
        let client = controlplane::client_for(kubeconfig).await.expect("client for the control plane");
        super::apply_crd(&client).await;
        let ns = super::namespace(&client, prefix).await;
        let world = World::from_file("deploy/sandbox/world.yaml").expect("world");
        let (_, issuer_ca) = super::service_account_issuer(kubeconfig);
        let config = SandboxConfig { world, issuer_ca_pem: Some(issuer_ca), ..Default::default() };
        let sandbox = Sandbox::start(config).await.expect("sandbox");
        let log_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("operator-logs");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let api = Api::namespaced(client.clone(), &ns);
        Self {
            sandbox,
            client,
            ns,
            api,
            operators: Vec::new(),
            log_dir,
            extra: Default::default(),
            kubeconfig: Some(kubeconfig.to_owned()),
        }
    }

    /// `rootkey-operator <subcommand>` configured as the tests' operators are (`run` and `check`
    /// take the same flags): the sandbox's endpoints, CA and credentials, this namespace.
    pub fn operator_command(&self, subcommand: &str, options: &OperatorOptions) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rootkey-operator"));
        cmd.arg(subcommand)
            .args(["--log-format", "json", "--watch-namespaces", &self.ns, "--cloud", "Custom"])
            .args(["--authority-host", &self.sandbox.authority_url()])
            .args(["--graph-url", &self.sandbox.graph_url()])
            .args(["--hsm-dns-suffixes", &self.sandbox.hsm_dns_suffix()])
            .arg("--ca-bundle")
            .arg(self.sandbox.ca_pem_path())
            .args(["--azure-identity", "secret", "--cluster-id", options.cluster_id.unwrap_or("test-cluster")])
            .args(["--antimatter-api-urls", &self.api_url()])
            .args(["--lease-namespace", &self.ns])
            .env("AZURE_CLIENT_ID", OPERATOR_CLIENT)
            .env("AZURE_CLIENT_SECRET", OPERATOR_SECRET)
            .env("RUST_LOG", "debug,hyper=info,rustls=info,h2=info,tower=info,kube_client=info,reqwest=info")
            .stdin(Stdio::null());
        if let Some(kubeconfig) = &self.kubeconfig {
            cmd.env("KUBECONFIG", kubeconfig);
        }
        if options.leader_elect {
            cmd.arg("--leader-elect");
        }
        if !options.ask_antimatter_for_application {
            cmd.args(["--antimatter-application-id", ANTIMATTER_APP]);
        }
        if let Some(policy) = options.policy {
            let path = self.log_dir.join(format!("{}-policy.yaml", self.ns));
            std::fs::write(&path, policy).expect("policy file");
            cmd.arg("--tenancy-policy").arg(path);
        }
        cmd
    }

    /// Starts one more operator like [`Self::spawn_operator`], with extra arguments and
    /// environment, remembering its metrics/probe ports; returns its index.
    pub fn spawn_operator_ext(&mut self, options: &OperatorOptions, extra: &SpawnExtra) -> usize {
        let index = self.operators.len();
        let log_path = self.log_dir.join(format!("{}-{index}.log", self.ns));
        let log = std::fs::File::create(&log_path).expect("operator log");
        let port = || std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let ports = SpawnedPorts { metrics: port(), probe: port() };
        let mut cmd = self.operator_command("run", options);
        cmd.args(["--metrics-addr", &format!("127.0.0.1:{}", ports.metrics)])
            .args(["--probe-addr", &format!("127.0.0.1:{}", ports.probe)])
            .args(["--pod-name", &format!("operator-{index}")])
            .args(&extra.args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in &extra.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn operator");
        self.operators.push(child);
        self.extra.insert(index, ports);
        index
    }

    /// Ports of an operator started by [`Self::spawn_operator_ext`].
    pub fn ports(&self, index: usize) -> Option<SpawnedPorts> {
        self.extra.get(&index).copied()
    }

    /// Process ID of operator `index`.
    pub fn operator_pid(&self, index: usize) -> u32 {
        self.operators[index].id()
    }

    /// Number of operators started so far (killed ones included).
    pub fn operator_count(&self) -> usize {
        self.operators.len()
    }

    /// Exit status of operator `index` if it has exited.
    pub fn operator_exited(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        self.operators[index].try_wait().expect("try_wait")
    }

    /// Sends SIGTERM to operator `index`.
    pub fn terminate_operator(&self, index: usize) {
        let status = Command::new("kill").args(["-TERM", &self.operators[index].id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM");
    }

    /// The operator's `/metrics` text (operators started by [`Self::spawn_operator_ext`]).
    pub async fn metrics(&self, index: usize) -> Option<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let port = self.ports(index)?.metrics;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.ok()?;
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await.ok()?.ok()?;
        let text = String::from_utf8_lossy(&out).into_owned();
        text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
    }

    /// Path of operator `index`'s log.
    pub fn log_path(&self, index: usize) -> PathBuf {
        self.log_dir.join(format!("{}-{index}.log", self.ns))
    }

    /// Starts one more operator process watching this namespace; returns its index.
    pub fn spawn_operator(&mut self, options: &OperatorOptions) -> usize {
        self.spawn_operator_ext(options, &SpawnExtra::default())
    }

    pub fn kill_operator(&mut self, index: usize) {
        let child = &mut self.operators[index];
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn hsm_url(&self) -> String {
        self.sandbox.hsm_url(HSM)
    }

    pub fn api_url(&self) -> String {
        self.sandbox.antimatter_url()
    }

    /// Applies an API-key Secret named `name`.
    pub async fn api_key_secret(&self, name: &str, value: &str) {
        self.secret(name, json!({ "apiKey": value })).await;
    }

    pub async fn secret(&self, name: &str, string_data: Value) {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": string_data});
        secrets.patch(name, &PatchParams::apply("rootkey-tests").force(), &Patch::Apply(&s)).await.expect("secret");
    }

    /// Creates Antimatter's service principal in the tenant (as an admin would by hand) through
    /// the sandbox's Graph; returns its object ID.
    pub async fn create_antimatter_principal(&self) -> String {
        let client = self.sandbox.client();
        let graph = self.sandbox.graph_url();
        let token = client
            .token(
                &self.sandbox.authority_url(),
                TENANT,
                OPERATOR_CLIENT,
                OPERATOR_SECRET,
                &format!("{graph}/.default"),
            )
            .await
            .expect("token");
        let token = token.json()["access_token"].as_str().expect("access_token").to_owned();
        let created = client
            .post_json(&format!("{graph}/v1.0/servicePrincipals"), Some(&token), &json!({"appId": ANTIMATTER_APP}))
            .await
            .expect("create");
        assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
        created.json()["id"].as_str().expect("id").to_owned()
    }

    /// A spec for key `key` in the sandbox HSM with the given extra fields merged in.
    pub fn spec(&self, key: &str, extra: Value) -> Value {
        let mut spec = json!({
            "domainId": DOMAIN,
            "tenantId": TENANT,
            "hsm": { "name": HSM },
            "key": { "name": key },
            "antimatter": { "apiUrl": self.api_url(), "apiKeySecretRef": { "name": "api-key" } },
        });
        merge(&mut spec, extra);
        spec
    }

    pub async fn apply(&self, name: &str, spec: Value) {
        let doc = json!({"apiVersion": "antimatter.io/v1alpha1", "kind": "AzureRootKey", "metadata": {"name": name}, "spec": spec});
        self.api.patch(name, &PatchParams::apply("rootkey-tests").force(), &Patch::Apply(&doc)).await.expect("apply");
    }

    /// Touches an annotation: a reconcile with nothing changed (generation stays).
    pub async fn poke(&self, name: &str) {
        let patch = json!({"metadata": {"annotations": {"rootkey-tests/poke": format!("{:?}", Instant::now())}}});
        self.api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("poke");
    }

    pub async fn delete(&self, name: &str) {
        self.api.delete(name, &DeleteParams::default()).await.expect("delete");
    }

    /// Waits until `check` holds for the object, failing with its status after `timeout`.
    pub async fn wait_for(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&AzureRootKey) -> bool,
    ) -> AzureRootKey {
        let deadline = Instant::now() + timeout;
        loop {
            let obj = self.api.get_opt(name).await.expect("get");
            if let Some(obj) = &obj
                && check(obj)
            {
                return obj.clone();
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not reached in {timeout:?}; object: {}",
                    serde_json::to_string_pretty(&obj).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_gone(&self, name: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.api.get_opt(name).await.expect("get").is_some() {
            assert!(Instant::now() < deadline, "{name} still exists after {timeout:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_condition(
        &self,
        name: &str,
        kind: &str,
        status: ConditionStatus,
        reason: Option<&str>,
    ) -> AzureRootKey {
        let what = format!("{kind}={status:?} {}", reason.unwrap_or(""));
        self.wait_for(name, Duration::from_secs(30), &what, |o| {
            condition(o, kind).is_some_and(|c| c.status == status && reason.is_none_or(|r| c.reason == r))
        })
        .await
    }

    /// Warning events about `name`, as (reason, note).
    pub async fn warnings(&self, name: &str) -> Vec<(String, String)> {
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), &self.ns);
        events
            .list(&kube::api::ListParams::default())
            .await
            .expect("events")
            .items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    pub async fn wait_ready(&self, name: &str) -> AzureRootKey {
        self.wait_condition(name, "Ready", ConditionStatus::True, None).await
    }

    /// Everything the operators logged so far.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for i in 0..self.operators.len() {
            all.push_str(
                &std::fs::read_to_string(self.log_dir.join(format!("{}-{i}.log", self.ns))).unwrap_or_default(),
            );
        }
        all
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for child in &mut self.operators {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn condition<'a>(o: &'a AzureRootKey, kind: &str) -> Option<&'a Condition> {
    o.status.as_ref()?.conditions.iter().find(|c| c.type_ == kind)
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (b, e) => *b = e,
    }
}
