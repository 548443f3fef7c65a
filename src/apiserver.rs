//! The Kubernetes client, over HTTP/2. kube's default client speaks HTTP/1.1 only, which takes one
//! TLS connection per request in flight: at 64 concurrent reconciles plus their event writes that
//! was ~150 connections to the API server (seen with `ss`), each a handshake and a client-certificate
//! check it paid for, and each with its own buffers here. client-go uses HTTP/2 for the same reason. The client is built
//! from kube's own pieces (kubeconfig / in-cluster config, TLS, auth and header layers); only the
//! connection differs. A proxy in the config falls back to kube's default client, which handles it.

use std::time::Duration;

use hyper_util::{client::legacy::Builder, rt::TokioExecutor};
use kube::{Client, Config, client::ConfigExt};
use tower::{BoxError, ServiceBuilder};

/// Pings keep an idle connection's reads within the read timeout and detect a dead peer, as
/// client-go's 30 s read-idle health check does.
const KEEP_ALIVE: Duration = Duration::from_secs(30);

/// A client for the cluster the environment points at (in-cluster config or `KUBECONFIG`).
pub async fn client() -> Result<Client, kube::Error> {
    let config = Config::infer().await.map_err(kube::Error::InferConfig)?;
    if config.proxy_url.is_some() {
        return Client::try_from(config);
    }
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    // Without it, a write's DATA frame waits behind Nagle for the ACK of its HEADERS frame, which
    // the API server delays: one status patch took 49 ms instead of 5 (bench/, one object). Go, and
    // so client-go, sets it on every connection.
    tcp.set_nodelay(true);
    let tls =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config.rustls_client_config()?).https_or_http();
    let tls = match &config.tls_server_name {
        Some(name) => tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            name.clone().try_into().map_err(|e| kube::Error::Service(Box::new(e)))?,
        )),
        None => tls,
    };
    let mut connector = hyper_timeout::TimeoutConnector::new(tls.enable_all_versions().wrap_connector(tcp));
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let http = Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .http2_keep_alive_interval(KEEP_ALIVE)
        .http2_keep_alive_while_idle(true)
        .http2_adaptive_window(true)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http);
    Ok(Client::new(service, config.default_namespace))
}
