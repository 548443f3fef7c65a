//! HTTPS/HTTP listeners, request model, host dispatch, latency, faults, rate limits, counters.

use crate::state::{FaultAction, RequestRecord, Service, Shared};
use crate::{admin, antimatter, entra, graph, hsm};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// Marks the sandbox's own calls (Antimatter's pairing check) in the request log.
pub(crate) const INTERNAL_HEADER: &str = "x-sandbox-internal";

/// Maximum request body size.
pub const MAX_BODY: usize = 1 << 20;

/// A parsed request.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: String,
    /// Host without port, lower-case.
    pub host: String,
    /// Raw path (percent-encoded as sent).
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.iter().rev().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }
    pub fn header(&self, k: &str) -> Option<&str> {
        self.headers.get(k).and_then(|v| v.to_str().ok())
    }
    pub fn bearer(&self) -> Option<&str> {
        let h = self.header("authorization")?;
        let (scheme, tok) = h.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| tok.trim()).filter(|t| !t.is_empty())
    }
    pub fn json(&self) -> Option<Value> {
        if self.body.is_empty() {
            return None;
        }
        serde_json::from_slice(&self.body).ok()
    }
    /// Path segments after the leading slashes (empty segments inside are kept).
    pub fn segments(&self) -> Vec<String> {
        self.path.trim_start_matches('/').split('/').map(crate::util::pct_decode).collect()
    }
}

/// A response.
#[derive(Debug, Clone)]
pub(crate) struct Resp {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(status: u16, v: &Value) -> Resp {
        Resp {
            status,
            headers: vec![("content-type", "application/json; charset=utf-8".into())],
            body: v.to_string().into_bytes(),
        }
    }
    pub fn empty(status: u16) -> Resp {
        Resp { status, headers: vec![], body: vec![] }
    }
    pub fn text(status: u16, t: &str) -> Resp {
        Resp {
            status,
            headers: vec![("content-type", "text/plain; charset=utf-8".into())],
            body: t.as_bytes().to_vec(),
        }
    }
    pub fn with(mut self, k: &'static str, v: impl Into<String>) -> Resp {
        self.headers.push((k, v.into()));
        self
    }
    pub fn body_json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

pub(crate) enum Outcome {
    Resp(Resp),
    Drop,
    /// Slow-loris: a 200 whose body arrives one byte every `every_ms`.
    Trickle {
        bytes: u64,
        every_ms: u64,
    },
}

impl Outcome {
    fn status(&self) -> u16 {
        match self {
            Outcome::Resp(r) => r.status,
            Outcome::Drop => 0,
            Outcome::Trickle { .. } => 200,
        }
    }
}

/// Which service a Host header addresses.
pub(crate) enum Target {
    Entra,
    Graph,
    Hsm(String),
    Antimatter,
}

pub(crate) fn target(host: &str) -> Option<Target> {
    match host {
        "login.sandbox.localhost" => Some(Target::Entra),
        "graph.sandbox.localhost" => Some(Target::Graph),
        "api.sandbox.localhost" => Some(Target::Antimatter),
        h => {
            let name = h.strip_suffix(".managedhsm.sandbox.localhost")?;
            (!name.is_empty() && !name.contains('.')).then(|| Target::Hsm(name.to_string()))
        }
    }
}

fn fault_response(svc: Service, status: u16, retry_after: Option<u64>) -> Resp {
    let ra = retry_after.unwrap_or(1);
    let reason =
        if status == 429 { "Too many requests (injected fault)" } else { "Service unavailable (injected fault)" };
    let r = match svc {
        Service::Hsm => {
            let code = match status {
                429 => "Throttled",
                503 => "ServiceUnavailable",
                _ => "InternalServerError",
            };
            Resp::json(status, &json!({"error": {"code": code, "message": reason}}))
        }
        Service::Graph => {
            let code = if status == 429 { "TooManyRequests" } else { "serviceNotAvailable" };
            Resp::json(status, &json!({"error": {"code": code, "message": reason}}))
        }
        Service::Entra => {
            let err = if status == 429 { "temporarily_unavailable" } else { "server_error" };
            Resp::json(
                status,
                &json!({"error": err, "error_description": format!("AADSTS90033: {reason}."), "error_codes": [90033]}),
            )
        }
        Service::Antimatter => {
            if status == 429 {
                Resp::json(429, &json!({"resourceType": "request", "identifier": "", "message": reason}))
            } else {
                Resp::json(status, &json!({"traceID": crate::util::uuid_v4(), "message": reason}))
            }
        }
    };
    if status == 429 || status == 503 { r.with("retry-after", ra.to_string()) } else { r }
}

/// Route one request through latency, faults, rate limits, the service, and the counters, and
/// record it in the request log.
pub(crate) async fn dispatch(shared: &Arc<Shared>, req: Req) -> Outcome {
    let arrived = std::time::Instant::now();
    let mut record = RequestRecord {
        at_ms: 0,
        service: "unknown".into(),
        operation: "unknown".into(),
        hsm: None,
        host: req.host.clone(),
        path: req.path.clone(),
        retry_after: None,
        status: 0,
        authorization: req.headers.contains_key("authorization"),
        credential: carries_credential(shared, &req),
        internal: req.headers.contains_key(INTERNAL_HEADER),
    };
    let (route, outcome) = dispatch_inner(shared, req).await;
    if let Some((svc, op, hsm)) = route {
        record.service = svc.as_str().into();
        record.operation = op.into();
        record.hsm = hsm;
    }
    record.status = outcome.status();
    if let Outcome::Resp(r) = &outcome {
        record.retry_after =
            r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("retry-after")).and_then(|(_, v)| v.parse().ok());
    }
    shared.log_request(record, arrived);
    outcome
}

fn carries_credential(shared: &Shared, req: &Req) -> bool {
    let headers = req.headers.iter().any(|(_, v)| shared.contains_credential(v.as_bytes()));
    let query = req
        .query
        .iter()
        .any(|(a, b)| shared.contains_credential(a.as_bytes()) || shared.contains_credential(b.as_bytes()));
    headers || query || shared.contains_credential(&req.body) || shared.contains_credential(req.path.as_bytes())
}

fn huge_body(bytes: u64) -> Vec<u8> {
    let n = usize::try_from(bytes).unwrap_or(usize::MAX).min(1 << 30);
    let mut body = Vec::with_capacity(n);
    body.extend_from_slice(b"{\"value\":\"");
    body.resize(n.saturating_sub(2).max(body.len()), b'a');
    body.extend_from_slice(b"\"}");
    body.truncate(n);
    body
}

type Route = Option<(Service, &'static str, Option<String>)>;

async fn dispatch_inner(shared: &Arc<Shared>, req: Req) -> (Route, Outcome) {
    let Some(tgt) = target(&req.host) else {
        return (None, Outcome::Resp(Resp::text(404, "unknown host: the sandbox serves *.sandbox.localhost")));
    };
    let (svc, op, hsm_name) = match &tgt {
        Target::Entra => (Service::Entra, entra::classify(&req), None),
        Target::Graph => (Service::Graph, graph::classify(&req), None),
        Target::Hsm(n) => (Service::Hsm, hsm::classify(&req), Some(n.clone())),
        Target::Antimatter => (Service::Antimatter, antimatter::classify(&req), None),
    };
    let route = Some((svc, op, hsm_name.clone()));
    let latency = crate::state::lock(&shared.settings).latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some(action) = shared.take_fault(svc, op, hsm_name.as_deref()) {
        let faulted = match action {
            FaultAction::Latency { ms } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                None
            }
            FaultAction::Status { status, retry_after } => {
                Some(Outcome::Resp(fault_response(svc, status, retry_after)))
            }
            FaultAction::Drop => Some(Outcome::Drop),
            FaultAction::Body { status, body, content_type } => Some(Outcome::Resp(Resp {
                status: status.unwrap_or(200),
                headers: vec![(
                    "content-type",
                    content_type.unwrap_or_else(|| "application/json; charset=utf-8".into()),
                )],
                body: body.into_bytes(),
            })),
            FaultAction::Huge { bytes } => Some(Outcome::Resp(Resp {
                status: 200,
                headers: vec![("content-type", "application/json; charset=utf-8".into())],
                body: huge_body(bytes),
            })),
            FaultAction::Trickle { bytes, every_ms } => Some(Outcome::Trickle { bytes, every_ms: every_ms.max(1) }),
            FaultAction::Redirect { location, status } => {
                let location = location.replace("{path}", &req.path);
                Some(Outcome::Resp(Resp::empty(status.unwrap_or(307)).with("location", location)))
            }
        };
        if let Some(outcome) = faulted {
            shared.count(svc, op, outcome.status());
            return (route, outcome);
        }
    }
    if let (Some(h), Some(class)) = (&hsm_name, hsm::limit_class(op))
        && shared.hsm_exists(h)
        && let Err(ra) = shared.rate_limit(h, class)
    {
        shared.count(svc, op, 429);
        let msg = format!(
            "Request was not processed because too many requests were received. Reason: HSM '{h}' {} rate limit exceeded.",
            class.as_str()
        );
        return (
            route,
            Outcome::Resp(
                Resp::json(429, &json!({"error": {"code": "Throttled", "message": msg}}))
                    .with("retry-after", ra.to_string()),
            ),
        );
    }
    let resp = match tgt {
        Target::Entra => entra::handle(shared, &req, op),
        Target::Graph => graph::handle(shared, &req, op),
        Target::Hsm(name) => hsm::handle(shared, &name, &req, op),
        Target::Antimatter => antimatter::handle(shared, &req, op).await,
    };
    shared.count(svc, op, resp.status);
    (route, Outcome::Resp(resp))
}

/// A body that sends one byte per tick (slow-loris).
struct TrickleBody {
    remaining: u64,
    interval: tokio::time::Interval,
}

impl hyper::body::Body for TrickleBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        match self.interval.poll_tick(cx) {
            std::task::Poll::Ready(_) => {
                self.remaining -= 1;
                std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(b" ")))))
            }
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.remaining)
    }
}

type Body = http_body_util::Either<Full<Bytes>, TrickleBody>;

fn trickle(bytes: u64, every_ms: u64) -> hyper::Response<Body> {
    let mut interval = tokio::time::interval(Duration::from_millis(every_ms));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut r = hyper::Response::new(http_body_util::Either::Right(TrickleBody { remaining: bytes, interval }));
    r.headers_mut().insert("content-type", hyper::header::HeaderValue::from_static("application/json"));
    r
}

#[derive(Debug)]
struct Dropped;
impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}
impl std::error::Error for Dropped {}

async fn to_req(r: hyper::Request<Incoming>) -> Result<Req, Resp> {
    let (parts, body) = r.into_parts();
    let host_header = parts
        .headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let host = host_header
        .rsplit_once(':')
        .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
        .map(|(h, _)| h.to_string())
        .unwrap_or(host_header)
        .to_ascii_lowercase();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(Resp::text(413, "request body too large (limit 1 MiB)")),
    };
    Ok(Req {
        method: parts.method.as_str().to_string(),
        host,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(crate::util::parse_form).unwrap_or_default(),
        headers: parts.headers,
        body,
    })
}

fn to_hyper(r: Resp) -> hyper::Response<Full<Bytes>> {
    let mut b = hyper::Response::builder().status(r.status);
    for (k, v) in r.headers {
        b = b.header(k, v);
    }
    b.body(Full::new(Bytes::from(r.body))).unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())))
}

/// Bind the HTTPS port on 127.0.0.1 and [::1] (same port); returns the listeners and the port.
pub(crate) async fn bind_dual(port: u16) -> std::io::Result<(Vec<TcpListener>, u16)> {
    let mut last_err = None;
    for _ in 0..20 {
        let v4 = TcpListener::bind(("127.0.0.1", port)).await?;
        let p = v4.local_addr()?.port();
        match TcpListener::bind(("::1", p)).await {
            Ok(v6) => return Ok((vec![v4, v6], p)),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && port == 0 => {
                last_err = Some(e);
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Err(e),
            Err(e) => {
                tracing::warn!("IPv6 loopback unavailable ({e}); serving on 127.0.0.1 only");
                return Ok((vec![v4], p));
            }
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("could not bind a port on both loopbacks")))
}

/// Serve HTTPS on a listener until shutdown.
pub(crate) async fn serve_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let svc = service_fn(move |r: hyper::Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    let req = match to_req(r).await {
                        Ok(r) => r,
                        Err(resp) => return Ok(to_hyper(resp).map(http_body_util::Either::Left)),
                    };
                    match dispatch(&shared, req).await {
                        Outcome::Resp(r) => {
                            Ok::<hyper::Response<Body>, Dropped>(to_hyper(r).map(http_body_util::Either::Left))
                        }
                        Outcome::Drop => Err(Dropped),
                        Outcome::Trickle { bytes, every_ms } => Ok(trickle(bytes, every_ms)),
                    }
                }
            });
            let conn = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(tls), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {},
                _ = stop.changed() => {},
            }
        });
    }
}

/// Serve the plain-HTTP admin API until shutdown.
pub(crate) async fn serve_admin(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let shared = shared.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |r: hyper::Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    let resp = match to_req(r).await {
                        Ok(req) => admin::handle(&shared, &req),
                        Err(resp) => resp,
                    };
                    Ok::<_, std::convert::Infallible>(to_hyper(resp))
                }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {},
                _ = stop.changed() => {},
            }
        });
    }
}
