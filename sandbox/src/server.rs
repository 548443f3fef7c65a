//! The server, on top: binds the loopback listeners, terminates TLS, turns hyper requests into
//! [`Req`] and back, routes by `Host` to a service, and runs every request through the control
//! plane (latency, faults, rate limits, counters, the request log). It is the [`Loopback`] the
//! services use to call each other. Imports the services and every layer below.

use crate::context::{Context, Loopback};
use crate::services::{admin, antimatter, entra, graph, hsm, oidc};
use crate::wire::admin::{FaultAction, RequestRecord};
use crate::wire::{INTERNAL_HEADER, MAX_BODY, Req, Resp, Service, code_message_error};
use crate::{util, wire};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

/// What the sandbox does with a request.
enum Outcome {
    Resp(Resp),
    Drop,
    /// Slow-loris: a 200 whose body arrives one byte every `every_ms`.
    Trickle {
        bytes: u64,
        every_ms: u64,
    },
}

impl Outcome {
    /// The status as counters and the request log record it (0 = dropped).
    fn status(&self) -> u16 {
        match self {
            Outcome::Resp(r) => r.status,
            Outcome::Drop => 0,
            Outcome::Trickle { .. } => 200,
        }
    }
}

/// A request routed to a service (by `Host`) and to one of its routes.
enum Routed {
    Entra(entra::Route),
    Graph(graph::Route),
    Hsm(String, hsm::Route),
    /// The cell the host serves (`None`: the API host), and the route.
    Antimatter(Option<String>, antimatter::Route),
    Oidc(oidc::Route),
}

impl Routed {
    /// Route by `Host` (without port): `None` for a host the sandbox does not serve. Antimatter is
    /// served by the API host and by its cells' hosts.
    fn new(req: &Req) -> Option<Routed> {
        if let Some(cell) = wire::antimatter::host_cell(&req.host) {
            return Some(Routed::Antimatter(cell, antimatter::route(req)));
        }
        Some(match req.host.as_str() {
            "login.sandbox.localhost" => Routed::Entra(entra::route(req)),
            "graph.sandbox.localhost" => Routed::Graph(graph::route(req)),
            oidc::HOST => Routed::Oidc(oidc::route(req)),
            h => {
                let name = h.strip_suffix(".managedhsm.sandbox.localhost")?;
                if name.is_empty() || name.contains('.') {
                    return None;
                }
                Routed::Hsm(name.to_string(), hsm::route(req))
            }
        })
    }

    fn service(&self) -> Service {
        match self {
            Routed::Entra(_) => Service::Entra,
            Routed::Graph(_) => Service::Graph,
            Routed::Hsm(..) => Service::Hsm,
            Routed::Antimatter(..) => Service::Antimatter,
            Routed::Oidc(_) => Service::Oidc,
        }
    }

    fn operation(&self) -> &'static str {
        match self {
            Routed::Entra(r) => r.operation(),
            Routed::Graph(r) => r.operation(),
            Routed::Hsm(_, r) => r.operation(),
            Routed::Antimatter(_, r) => r.operation(),
            Routed::Oidc(r) => r.operation(),
        }
    }

    fn hsm(&self) -> Option<&str> {
        match self {
            Routed::Hsm(name, _) => Some(name),
            _ => None,
        }
    }
}

/// Route one request through latency, faults, rate limits, the service, and the counters, and
/// record it in the request log.
async fn dispatch(cx: &Arc<Context>, req: Req) -> Outcome {
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
        credential: carries_credential(cx, &req),
        internal: req.headers.contains_key(INTERNAL_HEADER),
    };
    let outcome = match Routed::new(&req) {
        None => Outcome::Resp(Resp::text(404, "unknown host: the sandbox serves *.sandbox.localhost")),
        Some(routed) => {
            let (svc, op) = (routed.service(), routed.operation());
            record.service = svc.as_str().into();
            record.operation = op.into();
            record.hsm = routed.hsm().map(str::to_string);
            let outcome = answer(cx, req, routed).await;
            cx.control.count(svc, op, outcome.status());
            outcome
        }
    };
    record.status = outcome.status();
    if let Outcome::Resp(r) = &outcome {
        record.retry_after =
            r.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("retry-after")).and_then(|(_, v)| v.parse().ok());
    }
    cx.control.log_request(record, arrived);
    outcome
}

/// Latency, then an injected fault, then the HSM's rate limit, then the service itself.
async fn answer(cx: &Arc<Context>, req: Req, routed: Routed) -> Outcome {
    let (svc, op) = (routed.service(), routed.operation());
    let latency = cx.control.settings().latency_ms;
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some(action) = cx.control.take_fault(svc, op, routed.hsm())
        && let Some(outcome) = injected(action, svc, &req).await
    {
        return outcome;
    }
    if let Routed::Hsm(h, route) = &routed
        && let Some(class) = route.limit_class()
        && cx.model.read(|s| s.hsms.contains_key(h))
        && let Err(retry_after) = cx.control.rate_limit(h, class)
    {
        let msg = format!(
            "Request was not processed because too many requests were received. Reason: HSM '{h}' {} rate limit exceeded.",
            class.as_str()
        );
        return Outcome::Resp(wire::hsm::error(429, "Throttled", msg).with("retry-after", retry_after.to_string()));
    }
    Outcome::Resp(match routed {
        // Entra fetches federated issuers' keys, the sandbox's own through the loopback.
        Routed::Entra(r) => entra::handle(cx, &req, r, cx).await,
        Routed::Oidc(r) => oidc::handle(cx, r),
        Routed::Graph(r) => graph::handle(cx, &req, r),
        Routed::Hsm(name, r) => hsm::handle(cx, &name, &req, r),
        // The context is also the loopback: the pairing check comes back in through `dispatch`.
        Routed::Antimatter(cell, r) => antimatter::handle(cx, &req, cell.as_deref(), r, cx).await,
    })
}

/// What a fault does instead of the service; `None` for added latency (then the service answers).
async fn injected(action: FaultAction, svc: Service, req: &Req) -> Option<Outcome> {
    Some(match action {
        FaultAction::Latency { ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            return None;
        }
        FaultAction::Status { status, retry_after } => Outcome::Resp(fault_response(svc, status, retry_after)),
        FaultAction::Drop => Outcome::Drop,
        FaultAction::Body { status, body, content_type } => Outcome::Resp(Resp::raw(
            status.unwrap_or(200),
            content_type.unwrap_or_else(|| "application/json; charset=utf-8".into()),
            body.into_bytes(),
        )),
        FaultAction::Huge { bytes } => {
            Outcome::Resp(Resp::raw(200, "application/json; charset=utf-8".into(), huge_body(bytes)))
        }
        FaultAction::Trickle { bytes, every_ms } => Outcome::Trickle { bytes, every_ms: every_ms.max(1) },
        FaultAction::Redirect { location, status } => {
            let location = location.replace("{path}", &req.path);
            Outcome::Resp(Resp::empty(status.unwrap_or(307)).with("location", location))
        }
    })
}

/// An injected status in each service's own error shape; 429 and 503 carry `Retry-After`.
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
            code_message_error(status, code, reason)
        }
        Service::Graph => {
            let code = if status == 429 { "TooManyRequests" } else { "serviceNotAvailable" };
            code_message_error(status, code, reason)
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
                wire::antimatter::resource_error(429, "request", "", reason)
            } else {
                Resp::json(status, &json!({"traceID": util::uuid_v4(), "message": reason}))
            }
        }
        Service::Oidc => Resp::text(status, reason),
    };
    if status == 429 || status == 503 { r.with("retry-after", ra.to_string()) } else { r }
}

fn carries_credential(cx: &Context, req: &Req) -> bool {
    cx.model.read(|s| {
        let headers = req.headers.iter().any(|(_, v)| s.contains_credential(v.as_bytes()));
        let query =
            req.query.iter().any(|(a, b)| s.contains_credential(a.as_bytes()) || s.contains_credential(b.as_bytes()));
        headers || query || s.contains_credential(&req.body) || s.contains_credential(req.path.as_bytes())
    })
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

impl Loopback for Arc<Context> {
    fn send(&self, req: Req) -> Pin<Box<dyn Future<Output = Option<Resp>> + Send + '_>> {
        // Boxed: dispatch → Antimatter → pairing check → dispatch is an async recursion.
        Box::pin(async move {
            match dispatch(self, req).await {
                Outcome::Resp(r) => Some(r),
                Outcome::Drop | Outcome::Trickle { .. } => None,
            }
        })
    }
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
        query: parts.uri.query().map(util::parse_form).unwrap_or_default(),
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

/// Bind the HTTPS port on 127.0.0.1 and \[::1\] (same port); returns the listeners and the port.
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
    cx: Arc<Context>,
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
        let cx = cx.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else { return };
            let svc = service_fn(move |r: hyper::Request<Incoming>| {
                let cx = cx.clone();
                async move {
                    let req = match to_req(r).await {
                        Ok(r) => r,
                        Err(resp) => return Ok(to_hyper(resp).map(http_body_util::Either::Left)),
                    };
                    match dispatch(&cx, req).await {
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
pub(crate) async fn serve_admin(listener: TcpListener, cx: Arc<Context>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((tcp, _)) = accepted else { continue };
        let cx = cx.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |r: hyper::Request<Incoming>| {
                let cx = cx.clone();
                async move {
                    let resp = match to_req(r).await {
                        Ok(req) => admin::handle(&cx, &req),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(method: &str, host: &str, path: &str) -> Option<(Service, &'static str)> {
        let req = Req {
            method: method.into(),
            host: host.into(),
            path: path.into(),
            query: vec![],
            headers: hyper::HeaderMap::new(),
            body: Bytes::new(),
        };
        Routed::new(&req).map(|r| (r.service(), r.operation()))
    }

    #[test]
    fn requests_get_the_listed_operation_names() {
        const LOGIN: &str = "login.sandbox.localhost";
        const GRAPH: &str = "graph.sandbox.localhost";
        const HSM: &str = "h.managedhsm.sandbox.localhost";
        const API: &str = "api.sandbox.localhost";
        const RA: &str = "/providers/Microsoft.Authorization/roleAssignments";
        const ENC: &str = "/v2/domains/dm-1/control/encryption";
        let cases = [
            ("POST", LOGIN, "/t/oauth2/v2.0/token".to_string(), "token"),
            ("GET", LOGIN, "/t/v2.0/.well-known/openid-configuration".into(), "openid-configuration"),
            ("GET", LOGIN, "/common/discovery/instance".into(), "instance-discovery"),
            ("GET", LOGIN, "/t/discovery/v2.0/keys".into(), "jwks"),
            ("GET", GRAPH, "/v1.0/servicePrincipals(appId='a')".into(), "sp.get"),
            ("GET", GRAPH, "/v1.0/servicePrincipals/id".into(), "sp.get"),
            ("GET", GRAPH, "/v1.0/servicePrincipals".into(), "sp.list"),
            ("POST", GRAPH, "/v1.0/servicePrincipals".into(), "sp.create"),
            ("PATCH", GRAPH, "/v1.0/servicePrincipals(appId=\"a\")".into(), "sp.upsert"),
            ("DELETE", GRAPH, "/v1.0/servicePrincipals/id".into(), "unknown"),
            ("POST", HSM, "/keys/k/create".into(), "key.create"),
            ("GET", HSM, "/keys/k".into(), "key.get"),
            ("GET", HSM, "/keys/k/v".into(), "key.get"),
            ("GET", HSM, "/keys".into(), "key.list"),
            ("GET", HSM, "/keys/k/versions".into(), "key.versions"),
            ("PATCH", HSM, "/keys/k/v".into(), "key.update"),
            ("DELETE", HSM, "/keys/k".into(), "key.delete"),
            ("POST", HSM, "/deletedkeys/k/recover".into(), "key.recover"),
            ("POST", HSM, "/keys/k/v/wrapkey".into(), "key.wrap"),
            ("POST", HSM, "/keys/k//unwrapKey".into(), "key.unwrap"),
            ("POST", HSM, "/keys/k/v/encrypt".into(), "key.encrypt"),
            ("POST", HSM, "/keys/k/v/decrypt".into(), "key.decrypt"),
            ("GET", HSM, "/deletedkeys/k".into(), "deletedkey.get"),
            ("GET", HSM, "/deletedkeys".into(), "deletedkey.list"),
            ("DELETE", HSM, "/deletedkeys/k".into(), "deletedkey.purge"),
            ("GET", HSM, "/providers/Microsoft.Authorization/roleDefinitions".into(), "rbac.definition.list"),
            ("GET", HSM, "/keys/providers/Microsoft.Authorization/roleDefinitions/r".into(), "rbac.definition.get"),
            ("PUT", HSM, format!("{RA}/n"), "rbac.assignment.put"),
            ("GET", HSM, format!("{RA}/n"), "rbac.assignment.get"),
            ("GET", HSM, RA.into(), "rbac.assignment.list"),
            ("DELETE", HSM, format!("/keys/k{RA}/n"), "rbac.assignment.delete"),
            ("POST", HSM, "/keys/k/v/sign".into(), "unknown"),
            ("POST", API, "/v2/domains/dm-1/authenticate".into(), "authenticate"),
            ("GET", API, format!("{ENC}/providers"), "providers.list"),
            ("POST", API, format!("{ENC}/keys"), "rek.add"),
            ("GET", API, format!("{ENC}/keys"), "rek.list"),
            ("GET", API, format!("{ENC}/keys/r"), "rek.get"),
            ("DELETE", API, format!("{ENC}/keys/r"), "rek.delete"),
            ("POST", API, format!("{ENC}/keys/r/test"), "rek.test"),
            ("GET", API, format!("{ENC}/active-key"), "active.get"),
            ("POST", API, format!("{ENC}/active-key"), "active.set"),
            ("POST", API, format!("{ENC}/rotate"), "rotate"),
            ("GET", API, format!("{ENC}/settings"), "settings.get"),
            ("PUT", API, format!("{ENC}/settings"), "settings.put"),
            ("GET", API, "/v2/domains".into(), "unknown"),
        ];
        for (method, host, path, want) in cases {
            let (svc, op) = routed(method, host, &path).unwrap_or_else(|| panic!("{host} is served"));
            assert_eq!(op, want, "{method} {host}{path}");
            let listed = crate::OPERATIONS.iter().find(|(s, _)| *s == svc.as_str()).map(|(_, ops)| *ops);
            assert!(listed.is_some_and(|ops| ops.contains(&op)), "{op} of {} is in OPERATIONS", svc.as_str());
        }
        assert_eq!(
            routed("POST", "antimatter-eu1.sandbox.localhost", &format!("{ENC}/rotate")),
            Some((Service::Antimatter, "rotate")),
            "a cell serves the API"
        );
        assert_eq!(routed("GET", "antimatter-.sandbox.localhost", "/v2/domains"), None);
        assert_eq!(routed("GET", "a.b.managedhsm.sandbox.localhost", "/keys"), None);
        assert_eq!(routed("GET", "example.com", "/"), None);
    }
}
