//! `rootkey-operator run`: flags, the shared [`Context`], leader election, probes and metrics, and
//! the controllers (one per watched namespace, or one for all).

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt, future::join_all};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    Api, Client, ResourceExt,
    runtime::{
        Controller, WatchStreamExt,
        controller::Config as ControllerConfig,
        predicates, reflector,
        utils::{Predicate, ResetTimerBackoff},
        watcher,
    },
};
use tokio::{net::TcpListener, sync::watch};
use url::Url;

use crate::{
    antimatter::AntimatterClient,
    api::AzureRootKey,
    apiserver,
    authority::Authority,
    azure::{Azure, IdentityMode},
    cloud::{Cloud, CloudName},
    controller::{self, Context, events::Publisher},
    leader::LeaderElector,
    metrics,
    pacing::Pacers,
    policy::TenancyPolicy,
    remote,
    remotes::Services,
};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Flags of `rootkey-operator run`; each can also be set by the environment variable shown.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Namespaces to watch (comma-separated); empty watches all.
    #[arg(long, env = "WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// Objects reconciled at once. A reconcile mostly waits on remote calls, and per-HSM pacing, not
    /// this number, bounds the rate Azure sees.
    #[arg(long, env = "CONCURRENCY", default_value_t = 64)]
    pub concurrency: u16,
    /// Azure cloud: sets the Entra ID authority, Microsoft Graph and the Managed HSM DNS suffix.
    #[arg(long, env = "AZURE_CLOUD", value_enum, default_value = "AzurePublic")]
    pub cloud: CloudName,
    /// Overrides the cloud's Entra ID authority host (https).
    #[arg(long, env = "AZURE_AUTHORITY_HOST")]
    pub authority_host: Option<Url>,
    /// Overrides the cloud's Microsoft Graph URL (https).
    #[arg(long, env = "AZURE_GRAPH_URL")]
    pub graph_url: Option<Url>,
    /// Overrides the cloud's Managed HSM DNS suffixes (comma-separated; `suffix[:port]`).
    #[arg(long, env = "AZURE_HSM_DNS_SUFFIXES", value_delimiter = ',')]
    pub hsm_dns_suffixes: Vec<String>,
    /// Extra PEM CA bundle trusted for every remote service (besides the system roots).
    #[arg(long, env = "ROOTKEY_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// How the operator authenticates to Azure as itself.
    #[arg(long, env = "AZURE_IDENTITY", value_enum, default_value = "auto")]
    pub azure_identity: IdentityMode,
    /// Tenancy policy file: which namespaces may use the operator's identity for which HSMs, keys,
    /// tenants and domains.
    #[arg(long, env = "ROOTKEY_TENANCY_POLICY")]
    pub tenancy_policy: Option<PathBuf>,
    /// Antimatter API base URLs an object may name in `spec.antimatter.apiUrl` (comma-separated,
    /// https); API keys and domain tokens are sent to these only, and to the domain cells within
    /// their domains that Antimatter names.
    #[arg(long, env = "ANTIMATTER_API_URLS", value_delimiter = ',', default_value = crate::api::DEFAULT_API_URL)]
    pub antimatter_api_urls: Vec<Url>,
    /// Antimatter's Azure application ID, the only application the operator grants access to keys.
    /// Unset: asked from the Antimatter API (objects without an API key are then refused).
    #[arg(long, env = "ANTIMATTER_APPLICATION_ID", value_parser = guid)]
    pub antimatter_application_id: Option<String>,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Address of the Prometheus `/metrics` endpoint.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Address of the `/healthz` and `/readyz` probes.
    #[arg(long, env = "PROBE_ADDR", default_value = "0.0.0.0:8081")]
    pub probe_addr: SocketAddr,
    /// Serve the metrics and the probes on this IP, keeping their ports: the pod's IP
    /// (`status.podIP`), so replicas with host networking on one host each bind their own address.
    #[arg(long, env = "LISTEN_IP")]
    pub listen_ip: Option<IpAddr>,
    /// Elect a leader among replicas through a Lease.
    #[arg(long, env = "LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of this replica in the Lease and in events.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// Cluster identity used in role-assignment names (default: the kube-system namespace UID).
    #[arg(long, env = "ROOTKEY_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// Key creations per second per HSM, a little under Managed HSM's limit of about 1; 0 turns pacing off.
    #[arg(long, env = "HSM_KEY_CREATES_PER_SECOND", default_value_t = 0.95)]
    pub hsm_key_creates_per_second: f64,
    /// RBAC calls (reads and writes) per second per HSM, a little under the limit of about 5; 0 turns pacing off.
    #[arg(long, env = "HSM_RBAC_PER_SECOND", default_value_t = 4.5)]
    pub hsm_rbac_per_second: f64,
}

fn guid(text: &str) -> Result<String, String> {
    uuid::Uuid::try_parse(text).map(|_| text.to_owned()).map_err(|_| format!("{text} is not a GUID"))
}

impl RunArgs {
    /// The metrics and probe addresses, on `--listen-ip` when it is set.
    fn listen_addrs(&self) -> (SocketAddr, SocketAddr) {
        let on_ip = |mut addr: SocketAddr| {
            if let Some(ip) = self.listen_ip {
                addr.set_ip(ip);
            }
            addr
        };
        (on_ip(self.metrics_addr), on_ip(self.probe_addr))
    }

    fn cloud(&self) -> anyhow::Result<Cloud> {
        let mut cloud = match Cloud::named(self.cloud) {
            Some(c) => c,
            None => Cloud {
                authority_host: self.authority_host.clone().context("--cloud Custom needs --authority-host")?,
                graph_url: self.graph_url.clone().context("--cloud Custom needs --graph-url")?,
                hsm_dns_suffixes: Vec::new(),
            },
        };
        if let Some(a) = &self.authority_host {
            cloud.authority_host = a.clone();
        }
        if let Some(g) = &self.graph_url {
            cloud.graph_url = g.clone();
        }
        if !self.hsm_dns_suffixes.is_empty() {
            cloud.hsm_dns_suffixes = self.hsm_dns_suffixes.iter().map(|s| s.trim().to_ascii_lowercase()).collect();
        }
        anyhow::ensure!(!cloud.hsm_dns_suffixes.is_empty(), "--cloud Custom needs --hsm-dns-suffixes");
        for url in [&cloud.authority_host, &cloud.graph_url] {
            anyhow::ensure!(url.scheme() == "https", "{url} must be https");
        }
        Ok(cloud)
    }

    fn ca_bundle(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.ca_bundle
            .as_ref()
            .map(|path| std::fs::read(path).with_context(|| format!("reading CA bundle {}", path.display())))
            .transpose()
    }

    /// Azure as the operator reaches it: the cloud, its identity, the CA bundle and the pacing.
    pub fn azure(&self) -> anyhow::Result<Azure> {
        let http = remote::http_client(self.ca_bundle()?.as_deref(), remote::Redirects::Never)?;
        let pacers = Pacers::new(self.hsm_key_creates_per_second, self.hsm_rbac_per_second);
        Ok(Azure::new(self.cloud()?, self.azure_identity, http, pacers))
    }

    /// The HTTP client for logging in to the Antimatter API (it redirects to the domain's cell,
    /// within its parent domain).
    pub fn antimatter_http(&self) -> anyhow::Result<reqwest::Client> {
        remote::http_client(self.ca_bundle()?.as_deref(), remote::Redirects::SameParentDomain)
    }

    /// The Antimatter client: its authed calls follow no redirect (a JWT never follows one), its
    /// logins follow the API's redirects to the domain's cell.
    pub fn antimatter(&self) -> anyhow::Result<AntimatterClient> {
        let authed = remote::http_client(self.ca_bundle()?.as_deref(), remote::Redirects::Never)?;
        Ok(AntimatterClient::new(authed, self.antimatter_http()?))
    }

    /// The Antimatter API allowlist, every entry https (API keys are sent to these).
    pub fn antimatter_api_urls(&self) -> anyhow::Result<&[Url]> {
        for url in &self.antimatter_api_urls {
            anyhow::ensure!(url.scheme() == "https", "--antimatter-api-urls: {url} must be https");
        }
        Ok(&self.antimatter_api_urls)
    }
}

/// How long a stopping operator lets the reconciles in flight finish before it drops them and
/// releases its Lease. A reconcile may wait far longer (key creations are paced at about one a
/// second per HSM, so 20 new objects kept a stopping leader, and the standby, waiting 17 s in the
/// two-node test); every step is idempotent, so the next leader redoes a dropped one safely.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(1);

/// The leader-election Lease, in the operator's namespace.
pub const LEASE_NAME: &str = "rootkey-operator";

/// The log filter when `RUST_LOG` is unset; the chart's default `logLevel` is the same.
pub const DEFAULT_LOG_FILTER: &str = "info,kube=warn,azure_core=warn,azure_identity=warn";

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Binds the probe and the metrics addresses (one server when they are the same) and serves them in
/// the background. Binding comes first and fails start-up: a bind error inside a spawned server was
/// lost with its task, and the process ran on unprobed, never Ready, with nothing in its log.
async fn start_servers(
    metrics_addr: SocketAddr,
    probe_addr: SocketAddr,
    ready: Arc<AtomicBool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let bind = async |addr| TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"));
    let probes = bind(probe_addr).await?;
    if metrics_addr == probe_addr {
        return Ok(vec![tokio::spawn(serve(probes, ready, true))]);
    }
    let metrics = bind(metrics_addr).await?;
    Ok(vec![
        tokio::spawn(serve(probes, ready, false)),
        tokio::spawn(serve(metrics, Arc::new(AtomicBool::new(true)), true)),
    ])
}

/// Serves `/healthz`, `/readyz` (ready once started) and `/metrics`.
async fn serve(listener: TcpListener, ready: Arc<AtomicBool>, with_metrics: bool) -> anyhow::Result<()> {
    use axum::{Router, http::StatusCode, routing::get};
    let mut app = Router::new().route("/healthz", get(|| async { "ok" })).route(
        "/readyz",
        get(move || {
            let ready = ready.clone();
            async move {
                if ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "starting")
                }
            }
        }),
    );
    if with_metrics {
        app = app.route("/metrics", get(|| async { metrics::render() }));
    }
    axum::serve(listener, app).await?;
    Ok(())
}

/// Resolves once SIGTERM or SIGINT arrives.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ready = Arc::new(AtomicBool::new(false));
    let (metrics_addr, probe_addr) = args.listen_addrs();
    let servers = start_servers(metrics_addr, probe_addr, ready.clone()).await?;

    let azure = args.azure()?;
    let policy = match &args.tenancy_policy {
        Some(path) => TenancyPolicy::from_yaml(&std::fs::read_to_string(path)?)
            .with_context(|| format!("tenancy policy {}", path.display()))?,
        None => {
            tracing::warn!("no tenancy policy: every namespace may use the operator's Azure identity for any HSM");
            TenancyPolicy::default()
        }
    };
    let authority = Authority::new(policy, args.antimatter_api_urls()?, args.antimatter_application_id.clone());
    let client = apiserver::client().await.context("connecting to the Kubernetes API")?;
    let cluster_id = match &args.cluster_id {
        Some(id) => id.clone(),
        None => Api::<Namespace>::all(client.clone())
            .get("kube-system")
            .await
            .context("reading the kube-system namespace (the cluster's identity)")?
            .uid()
            .context("kube-system has no UID")?,
    };
    let pod = args.pod_name.clone().unwrap_or_else(|| format!("rootkey-operator-{}", std::process::id()));
    let events = Publisher::start(client.clone(), controller::FIELD_MANAGER, &pod);
    let ctx = Arc::new(Context::new(
        client.clone(),
        Services::new(azure, args.antimatter()?, client.clone()),
        authority,
        cluster_id,
        events,
    ));
    ready.store(true, Ordering::Relaxed);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "started");

    let elector =
        args.leader_elect.then(|| LeaderElector::new(client.clone(), &args.lease_namespace, LEASE_NAME, &pod));
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    let mut led_from = None;
    metrics::set_leader(elector.is_none());
    if let Some(elector) = &elector {
        tracing::info!(identity = %pod, "waiting for leadership");
        let mut stop = stop_rx.clone();
        tokio::select! {
            sent = elector.acquire() => {
                led_from = Some(sent);
                metrics::set_leader(true);
                tracing::info!("leading");
            }
            _ = stop.changed() => return Ok(()),
        }
    }

    let namespaces: Vec<Option<String>> = if args.watch_namespaces.is_empty() {
        vec![None]
    } else {
        args.watch_namespaces.iter().map(|n| Some(n.clone())).collect()
    };
    let controllers = join_all(
        namespaces
            .into_iter()
            .map(|ns| run_controller(client.clone(), ns, ctx.clone(), args.concurrency, stop_rx.clone())),
    );
    let lost = async {
        match (&elector, led_from) {
            (Some(e), Some(renewed)) => e.hold(renewed).await,
            _ => std::future::pending().await,
        }
    };
    let mut stopping = stop_rx.clone();
    let drained = async move {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_DRAIN).await;
    };
    // Losing the lead, or a stop whose reconciles outlast SHUTDOWN_DRAIN, ends the select, which
    // drops the controllers (and every reconcile in flight) before anything below runs.
    let outcome = tokio::select! {
        _ = controllers => Ok(()),
        _ = drained => {
            tracing::info!(drain = ?SHUTDOWN_DRAIN, "stopping with reconciles in flight; the next leader runs them again");
            Ok(())
        }
        _ = lost => Err(anyhow::anyhow!("lost leadership; exiting so that only one replica reconciles")),
    };
    metrics::set_leader(false);
    match (&outcome, &elector) {
        (Err(_), _) => tracing::error!("stopped reconciling: leadership was lost or not renewed in time"),
        (Ok(()), Some(elector)) => elector.release().await,
        (Ok(()), None) => {}
    }
    signal.abort();
    servers.iter().for_each(|server| server.abort());
    outcome
}

/// How the watch retries after an API-server error: 0.1 s doubling to 0.5 s, each delay stretched by
/// up to 100 % jitter so replicas and namespaces do not retry in step, back to the start after a
/// minute without errors. A restarted API server is therefore seen again within 1 s. A retry is one
/// list request that fails fast while the server is down (or answers 503 while it installs its
/// paths), which costs it nothing worth saving. It is the controller's trigger backoff, the only
/// one on the watch: `Controller::for_stream` puts kube's default (0.8 s doubling to 30 s) on the
/// stream it is given unless told otherwise, and with a backoff on the stream too every error
/// slept in both (the 410 Gone after a restart waited 6.3 s in kube's; bench: `restart`).
fn watch_backoff() -> ResetTimerBackoff<watcher::ExponentialBackoff> {
    let retries = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_millis(500))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(retries.into(), Duration::from_secs(60))
}

/// Keeps the controller's cache from the watch's events. kube's reflector shows a relist's objects
/// only once the whole list is in, yet each one triggers a reconcile as it arrives, and a reconcile
/// of an object missing from the cache is dropped: an object created while the API server was
/// restarting was never reconciled until it next changed (bench: `restart`). So after the first
/// list, a listed object the cache does not hold yet is shown at once, as well as gathered for the
/// list's end (which still drops the objects deleted meanwhile). Objects it holds keep their old
/// copy until then, and the first list stays buffered only (the controller waits for it anyway):
/// showing every listed object at once would hold two copies of each during a list.
fn keep_cache(mut writer: reflector::store::Writer<AzureRootKey>) -> impl FnMut(&watcher::Event<AzureRootKey>) {
    let cache = writer.as_reader();
    let mut listed_once = false;
    move |event| {
        match event {
            watcher::Event::InitApply(ark) if listed_once && cache.get(&reflector::ObjectRef::from(ark)).is_none() => {
                writer.apply_watcher_event(&watcher::Event::Apply(ark.clone()));
            }
            watcher::Event::InitDone => listed_once = true,
            _ => {}
        }
        writer.apply_watcher_event(event);
    }
}

/// One controller over AzureRootKeys (in one namespace or all). Secrets are not watched (the
/// operator may only `get` the ones objects name): a changed Secret is read again within
/// `secrets::REMEMBER_FOR` (see `controller::secrets`).
async fn run_controller(
    client: Client,
    ns: Option<String>,
    ctx: Arc<Context>,
    concurrency: u16,
    stop: watch::Receiver<bool>,
) {
    let keys: Api<AzureRootKey> = match &ns {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    // Status writes (ours) do not wake the controller: only spec (generation), finalizer and
    // annotation changes do, plus requeues. Deletion of an object with a finalizer bumps the
    // generation.
    let (store, writer) = reflector::store();
    // The cache keeps what reconciles read: managed fields and kubectl's copy of the last applied
    // manifest are dropped, as they would roughly double its size. They can only be dropped once a
    // whole list page is decoded, so pages are small: 500 objects (kube's default) cost a restarted
    // operator about 10 MiB more at its peak than pages of 100 (bench/, N = 1,000).
    let changes = watcher(keys, watcher::Config::default().any_semantic().page_size(100))
        .modify(|ark| {
            ark.managed_fields_mut().clear();
            ark.annotations_mut().remove("kubectl.kubernetes.io/last-applied-configuration");
            if let Some(status) = ark.status.as_mut() {
                controller::status::trim_for_cache(status);
            }
        })
        .inspect_ok(keep_cache(writer))
        // A deleted object without finalizer never reaches a reconcile: forget it here.
        .inspect({
            let ctx = ctx.clone();
            move |event| {
                if let Ok(watcher::Event::Delete(ark)) = event {
                    ctx.memory.forget(ark);
                }
            }
        })
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::finalizers).combine(predicates::annotations),
            Default::default(),
        );
    ctx.services.cluster.watch(store.clone());
    let controller = Controller::for_stream(changes, store.clone());
    metrics::watch_objects(ns.as_deref(), store.clone());
    let (cache, housekeeping_ctx, housekeeping_ns) = (store, ctx.clone(), ns.clone());
    let housekeeping = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            housekeeping_ctx.memory.forget_stale(&cache, housekeeping_ns.as_deref());
        }
    });
    let mut stop_signal = stop.clone();
    controller
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .trigger_backoff(watch_backoff())
        .graceful_shutdown_on(async move {
            let _ = stop_signal.wait_for(|s| *s).await;
        })
        .run(controller::reconcile, controller::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile error");
            }
        })
        .await;
    housekeeping.abort();
    metrics::unwatch_objects(ns.as_deref());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str) -> AzureRootKey {
        crate::api::sample("team-a", name)
    }

    fn run_args(flags: &[&str]) -> RunArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        <Cli as clap::Parser>::parse_from([&["rootkey-operator"][..], flags].concat()).run
    }

    /// `--listen-ip` moves both servers to the pod's IP and keeps their ports (IPv6 too).
    #[test]
    fn the_listen_ip_replaces_the_addresses_ip_only() {
        let args = |extra: &[&str]| run_args(&[&["--metrics-addr", "0.0.0.0:9100"][..], extra].concat()).listen_addrs();
        let (metrics, probes) = args(&[]);
        assert_eq!((metrics.to_string(), probes.to_string()), ("0.0.0.0:9100".into(), "0.0.0.0:8081".into()));
        let (metrics, probes) = args(&["--listen-ip", "127.0.0.2"]);
        assert_eq!((metrics.to_string(), probes.to_string()), ("127.0.0.2:9100".into(), "127.0.0.2:8081".into()));
        let (metrics, _) = args(&["--listen-ip", "fd00::2"]);
        assert_eq!(metrics.to_string(), "[fd00::2]:9100");
    }

    /// A probe address another process holds stops start-up with that address in the error, before
    /// the Kubernetes API is asked anything: the process must not run on without its probes.
    #[tokio::test]
    async fn a_taken_probe_address_fails_start_up() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = taken.local_addr().expect("bound").to_string();
        let args = run_args(&["--probe-addr", &addr, "--metrics-addr", "127.0.0.1:0", "--listen-ip", "127.0.0.1"]);
        let started = tokio::time::timeout(Duration::from_secs(10), run(args)).await;
        let error = started.expect("start-up ends at once").expect_err("start-up fails");
        assert!(format!("{error:#}").starts_with(&format!("binding {addr}")), "{error:#}");
    }

    /// An object that first arrives in a relist (created while the API server was away) is in the
    /// cache when its reconcile asks for it, before the list ends; one deleted meanwhile goes at
    /// the end. The first list shows nothing until it is complete.
    #[test]
    fn a_relisted_object_is_cached_as_it_arrives() {
        use watcher::Event::{Init, InitApply, InitDone};
        let (cache, writer) = reflector::store::<AzureRootKey>();
        let mut keep = keep_cache(writer);
        let (old, gone, new) = (object("old"), object("gone"), object("new"));
        let cached = |o: &AzureRootKey| cache.get(&reflector::ObjectRef::from(o)).is_some();
        keep(&Init);
        keep(&InitApply(old.clone()));
        keep(&InitApply(gone.clone()));
        assert!(!cached(&old), "the first list is shown whole");
        keep(&InitDone);
        assert!(cached(&old) && cached(&gone));

        keep(&Init);
        let mut changed = old.clone();
        changed.metadata.resource_version = Some("9".into());
        keep(&InitApply(changed));
        keep(&InitApply(new.clone()));
        assert!(cached(&new), "the relisted object is there for its reconcile");
        let version = || cache.get(&reflector::ObjectRef::from(&old)).and_then(|o| o.metadata.resource_version.clone());
        assert_eq!(version(), None, "a cached object keeps its one copy until the list is in");
        keep(&InitDone);
        assert!(cached(&old) && cached(&new));
        assert_eq!(version().as_deref(), Some("9"));
        assert!(!cached(&gone), "deleted during the outage: gone once the list is in");
    }
}
