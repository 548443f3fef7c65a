//! A minimal HTTPS client that trusts the sandbox CA and connects to loopback whatever the host
//! name — for the crate's own tests and the `--selftest-rps` measurement. Imports [`crate::tls`].

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// Body as JSON (`Null` when not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// First header value by name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad URL.
    #[error("bad url: {0}")]
    Url(String),
    /// I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// HTTP.
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    /// TLS config.
    #[error("tls: {0}")]
    Tls(#[from] rustls::Error),
    /// Request building.
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// A client for one sandbox (all hosts go to 127.0.0.1:`port`).
#[derive(Clone)]
pub struct Client {
    connector: TlsConnector,
    port: u16,
}

/// One keep-alive connection to one host.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    host: String,
}

fn split_url(url: &str) -> Result<(String, String), ClientError> {
    let rest = url.strip_prefix("https://").ok_or_else(|| ClientError::Url(url.into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((authority.to_string(), path.to_string()))
}

impl Client {
    /// A client trusting `ca` for a sandbox on `port`.
    pub fn new(ca: &CertificateDer<'static>, port: u16) -> Result<Client, ClientError> {
        Ok(Client::with_tls(crate::tls::client_config(ca)?, port))
    }

    /// A client with this TLS configuration for the server on loopback `port`.
    pub fn with_tls(config: Arc<rustls::ClientConfig>, port: u16) -> Client {
        Client { connector: TlsConnector::from(config), port }
    }

    /// Open a keep-alive connection to `host` (without port).
    pub async fn connect(&self, host: &str) -> Result<Conn, ClientError> {
        let tcp = TcpStream::connect(("127.0.0.1", self.port)).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(host.to_string()).map_err(|_| ClientError::Url(host.into()))?;
        let tls = self.connector.connect(name, tcp).await?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender, host: format!("{host}:{}", self.port) })
    }

    /// One request on a fresh connection. `url` is `https://host:port/path?query`.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let (authority, path) = split_url(url)?;
        let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(&authority);
        let mut c = self.connect(host).await?;
        c.send(method, &path, headers, body).await
    }

    /// POST JSON.
    pub async fn post_json(&self, url: &str, bearer: Option<&str>, body: &Value) -> Result<Response, ClientError> {
        let auth = bearer.map(|b| format!("Bearer {b}"));
        let mut h = vec![("content-type", "application/json")];
        if let Some(a) = &auth {
            h.push(("authorization", a));
        }
        self.request("POST", url, &h, Some(body.to_string().into_bytes())).await
    }

    /// Client-credentials token by secret.
    pub async fn token(
        &self,
        authority: &str,
        tenant: &str,
        client_id: &str,
        secret: &str,
        scope: &str,
    ) -> Result<Response, ClientError> {
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", client_id)
            .append_pair("client_secret", secret)
            .append_pair("scope", scope)
            .finish();
        self.request(
            "POST",
            &format!("{authority}/{tenant}/oauth2/v2.0/token"),
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(form.into_bytes()),
        )
        .await
    }
}

impl Conn {
    /// Send a request on this connection (`path` includes the query).
    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Response, ClientError> {
        let mut b = hyper::Request::builder().method(method).uri(path).header("host", &self.host);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        // The connection takes the next request only once the previous answer is read.
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        Ok(Response { status, headers, body })
    }
}

/// Wrap an `Arc` for convenience in tests.
pub type SharedClient = Arc<Client>;
