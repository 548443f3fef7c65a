//! The control plane, beside the model: settings and the sandbox clock, injected faults, per-HSM
//! rate limits, request counters and the request log. Imports [`crate::wire`] (the shapes the
//! admin API shows them in) and [`crate::util`].

use crate::util::{self, lock, unix_now};
use crate::wire::Service;
use crate::wire::admin::{CounterRow, Fault, FaultAction, FaultSpec, RequestRecord, Settings, SettingsPatch};
use crate::world::WorldSettings;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The request log keeps at most this many records (later ones are counted, not kept).
pub const REQUEST_LOG_CAP: usize = 500_000;

/// Rate-limit classes (per HSM token buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitClass {
    /// Key creation (~1/s).
    Create,
    /// Key reads (~1100/s).
    Read,
    /// Role management (~5/s).
    Rbac,
}

impl LimitClass {
    /// Tokens per second.
    pub fn rate(self) -> f64 {
        match self {
            LimitClass::Create => 1.0,
            LimitClass::Read => 1100.0,
            LimitClass::Rbac => 5.0,
        }
    }
    /// Name.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitClass::Create => "create",
            LimitClass::Read => "read",
            LimitClass::Rbac => "rbac",
        }
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Installed faults, in the order they were added, and the next fault ID.
struct FaultTable {
    next_id: u64,
    installed: Vec<Fault>,
}

/// Settings, faults, limits, counters and the request log of one sandbox.
pub(crate) struct Control {
    settings: Mutex<Settings>,
    counters: Mutex<HashMap<(Service, &'static str, u16), u64>>,
    faults: Mutex<FaultTable>,
    requests: Mutex<Vec<RequestRecord>>,
    started: Instant,
    buckets: Mutex<HashMap<(String, LimitClass), Bucket>>,
}

impl Control {
    pub fn new(s: &WorldSettings) -> Control {
        Control {
            settings: Mutex::new(Settings {
                latency_ms: s.latency_ms,
                rate_limits: s.rate_limits,
                clock_offset_secs: 0,
                token_lifetime_secs: s.token_lifetime_secs,
                antimatter_token_lifetime_secs: s.antimatter_token_lifetime_secs,
                rotate_batches: s.rotate_batches,
                rbac_propagation_secs: s.rbac_propagation_secs,
                principal_replication_secs: s.principal_replication_secs,
                page_size: s.page_size,
            }),
            counters: Mutex::new(HashMap::new()),
            faults: Mutex::new(FaultTable { next_id: 1, installed: Vec::new() }),
            requests: Mutex::new(Vec::new()),
            started: Instant::now(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Current time as the sandbox sees it (wall clock + offset).
    pub fn now(&self) -> i64 {
        unix_now() + self.settings().clock_offset_secs
    }

    /// When something made now takes effect after a delay of `secs` (sandbox clock).
    pub fn after(&self, secs: u64) -> i64 {
        self.now().saturating_add(i64::try_from(secs).unwrap_or(i64::MAX))
    }

    pub fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    /// Apply a settings patch.
    pub fn patch_settings(&self, p: &SettingsPatch) {
        let mut s = lock(&self.settings);
        if let Some(v) = p.latency_ms {
            s.latency_ms = v;
        }
        if let Some(v) = p.rate_limits {
            s.rate_limits = v;
        }
        if let Some(v) = p.clock_offset_secs {
            s.clock_offset_secs = v;
        }
        if let Some(v) = p.token_lifetime_secs {
            s.token_lifetime_secs = v;
        }
        if let Some(v) = p.antimatter_token_lifetime_secs {
            s.antimatter_token_lifetime_secs = v;
        }
        if let Some(v) = p.rotate_batches {
            s.rotate_batches = v;
        }
        if let Some(v) = p.rbac_propagation_secs {
            s.rbac_propagation_secs = v;
        }
        if let Some(v) = p.principal_replication_secs {
            s.principal_replication_secs = v;
        }
        if let Some(v) = p.page_size {
            s.page_size = v;
        }
        drop(s);
        // Buckets start full again: a test that switches limits on gets a known budget.
        lock(&self.buckets).clear();
    }

    /// Count one answered (or dropped, status 0) request.
    pub fn count(&self, svc: Service, op: &'static str, status: u16) {
        *lock(&self.counters).entry((svc, op, status)).or_insert(0) += 1;
    }

    /// The counters, sorted by service, operation and status.
    pub fn counter_rows(&self) -> Vec<CounterRow> {
        let mut rows: Vec<CounterRow> = lock(&self.counters)
            .iter()
            .map(|((s, o, st), c)| CounterRow {
                service: s.as_str().into(),
                operation: (*o).into(),
                status: *st,
                count: *c,
            })
            .collect();
        rows.sort_by(|a, b| (&a.service, &a.operation, a.status).cmp(&(&b.service, &b.operation, b.status)));
        rows
    }

    pub fn reset_counters(&self) {
        lock(&self.counters).clear();
    }

    /// Appends one record to the request log (bounded by [`REQUEST_LOG_CAP`]).
    pub fn log_request(&self, mut record: RequestRecord, arrived: Instant) {
        record.at_ms = arrived.duration_since(self.started).as_millis() as u64;
        let mut log = lock(&self.requests);
        if log.len() < REQUEST_LOG_CAP {
            log.push(record);
        }
    }

    /// Read the request log under its lock (it can be large; no copy).
    pub fn with_requests<R>(&self, f: impl FnOnce(&[RequestRecord]) -> R) -> R {
        f(&lock(&self.requests))
    }

    pub fn clear_requests(&self) {
        lock(&self.requests).clear();
    }

    /// Install a fault; returns its ID.
    pub fn add_fault(&self, spec: FaultSpec) -> u64 {
        let mut table = lock(&self.faults);
        let id = table.next_id;
        table.next_id += 1;
        table.installed.push(Fault { id, remaining: spec.count, spec, applied: 0 });
        id
    }

    pub fn faults(&self) -> Vec<Fault> {
        lock(&self.faults).installed.clone()
    }

    pub fn clear_faults(&self) {
        lock(&self.faults).installed.clear();
    }

    /// Remove one fault; `false` if there is none with this ID.
    pub fn remove_fault(&self, id: u64) -> bool {
        let faults = &mut lock(&self.faults).installed;
        let before = faults.len();
        faults.retain(|x| x.id != id);
        faults.len() < before
    }

    /// Find the first matching fault, consume one use, and return its action.
    pub fn take_fault(&self, svc: Service, op: &str, hsm: Option<&str>) -> Option<FaultAction> {
        let mut table = lock(&self.faults);
        let faults = &mut table.installed;
        let mut hit = None;
        for (i, f) in faults.iter_mut().enumerate() {
            if f.spec.service != svc.as_str() {
                continue;
            }
            if let Some(o) = &f.spec.operation
                && o != op
            {
                continue;
            }
            if let Some(h) = &f.spec.hsm
                && Some(h.as_str()) != hsm
            {
                continue;
            }
            if f.remaining == Some(0) {
                continue;
            }
            if let Some(p) = f.spec.probability
                && util::random_unit() >= p
            {
                continue;
            }
            if let Some(r) = f.remaining.as_mut() {
                *r -= 1;
            }
            f.applied += 1;
            hit = Some((i, f.spec.action.clone()));
            break;
        }
        let (i, action) = hit?;
        if faults[i].remaining == Some(0) {
            faults.remove(i);
        }
        Some(action)
    }

    /// Take one token from the HSM's bucket for `class`. `Err(retry_after_secs)` when throttled;
    /// a throttled request still consumes budget (down to minus one second's worth).
    pub fn rate_limit(&self, hsm: &str, class: LimitClass) -> Result<(), u64> {
        if !self.settings().rate_limits {
            return Ok(());
        }
        let rate = class.rate();
        let cap = rate.max(1.0);
        let now = Instant::now();
        let mut b = lock(&self.buckets);
        let bucket = b.entry((hsm.to_string(), class)).or_insert(Bucket { tokens: cap, last: now });
        let dt = now.duration_since(bucket.last).as_secs_f64();
        bucket.last = now;
        bucket.tokens = (bucket.tokens + dt * rate).min(cap);
        let ok = bucket.tokens >= 1.0;
        bucket.tokens = (bucket.tokens - 1.0).max(-cap);
        if ok {
            Ok(())
        } else {
            let deficit = 1.0 - bucket.tokens;
            Err(((deficit / rate).ceil() as u64).max(1))
        }
    }
}
