"""What the benchmark measures, and how.

Per run (fresh control plane, fresh sandbox with deploy/sandbox/bench-world.yaml, the release
operator as its own process): N AzureRootKeys over 10 namespaces and 5 HSMs (even objects use a
pre-existing key with create Never/IfMissing alternately, odd objects a new key), one API-key Secret
per namespace; we watch the objects and record, per object, apply (POST answered) → first Ready=True
seen on the watch. Remote calls come from the operator's own metrics (/metrics, remote_calls by
service/operation/code) and from the sandbox counters (the sandbox's own pairing-check calls —
1 token + 1 key.get + 1 key.wrap + 1 key.unwrap per rek.test — are subtracted). API-server writes per
object = MODIFIED watch events on the object + Event writes (events.k8s.io; series count) regarding it.
Memory and CPU come from /proc/PID/{status,stat}; the relist peak is measured by restarting the
operator process (a fresh list + one reconcile per object), not by restarting kube-apiserver.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import threading
import time

from .processes import http_get

CLK_TCK = os.sysconf("SC_CLK_TCK")

# ------------------------------------------------------------------ the operator process


def rss_mib(pid, field="VmRSS") -> float | None:
    """VmRSS (now) or VmHWM (peak) of a process in MiB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k == field:
                    return int(v.split()[0]) / 1024.0
    except OSError:
        pass
    return None


def cpu_seconds(pid) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    except (OSError, IndexError):
        return 0.0


def cpu_percent(pid, seconds) -> float:
    """Share of one core the process used over the next `seconds`."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


class MemMonitor(threading.Thread):
    """Samples VmRSS every 200 ms; `peak` is the highest seen."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.stopped = pid, 0.0, threading.Event()

    def run(self):
        while not self.stopped.is_set():
            self.peak = max(self.peak, rss_mib(self.pid) or 0.0)
            time.sleep(0.2)

    def peak_mib(self) -> float:
        """The sampled peak or the kernel's high-water mark, whichever is higher."""
        return max(self.peak, rss_mib(self.pid, "VmHWM") or 0.0)


def binary_info(path) -> dict:
    size = path.stat().st_size / 1e6
    desc = (
        subprocess.run(["file", "-b", str(path)], capture_output=True, text=True).stdout if shutil.which("file") else ""
    )
    static = "statically linked" in desc or "static-pie" in desc
    stripped = ", stripped" in desc or "not stripped" not in desc
    linkage = ("static" if static else "dynamically linked (glibc)") + (", stripped" if stripped else "")
    return {"path": str(path), "mb": size, "static": static, "stripped": stripped, "linkage": linkage}


# ------------------------------------------------------------------ the API server


def last_check_unix(obj) -> int:
    """status.pairing.lastCheckTime in Unix seconds (0 when absent)."""
    t = ((obj.get("status") or {}).get("pairing") or {}).get("lastCheckTime")
    if not t:
        return 0
    return int(datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp())


def ready_status(obj) -> tuple[str | None, str | None]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status"), c.get("reason")
    return None, None


def object_key(ref) -> str:
    """namespace/name of an object's metadata, or of an Event's `regarding`."""
    return f"{ref.get('namespace')}/{ref.get('name')}"


class Watcher(threading.Thread):
    """Watches every AzureRootKey: the first Ready=True per object, and how many MODIFIED events in all."""

    def __init__(self, kube, resource_version):
        super().__init__(daemon=True)
        self.kube, self.resource_version = kube, resource_version
        self.lock = threading.Lock()
        self.ready_at, self.reasons, self.modified_events = {}, {}, 0
        self.stopped, self.error = threading.Event(), None
        self._watch = None

    def run(self):
        while not self.stopped.is_set():
            try:
                self._watch, events = self.kube.watch_root_keys(self.resource_version)
                for ev in events:
                    if self.stopped.is_set():
                        break
                    self._record(ev, time.monotonic())
            except Exception as e:  # reconnect from the last resourceVersion
                if not self.stopped.is_set():
                    self.error = repr(e)
                    time.sleep(0.5)

    def _record(self, ev, seen_at):
        obj = ev["object"]
        md = obj["metadata"]
        key = object_key(md)
        self.resource_version = md["resourceVersion"]
        status, reason = ready_status(obj)
        with self.lock:
            if ev["type"] == "MODIFIED":
                self.modified_events += 1
            if status == "True" and key not in self.ready_at:
                self.ready_at[key] = seen_at
            self.reasons[key] = (status, reason)

    def stop(self):
        self.stopped.set()
        if self._watch:
            self._watch.stop()

    def ready_count(self) -> int:
        with self.lock:
            return len(self.ready_at)

    def modified_total(self) -> int:
        with self.lock:
            return self.modified_events

    def snapshot(self):
        """(first Ready=True time, last (status, reason)) per namespace/name."""
        with self.lock:
            return dict(self.ready_at), dict(self.reasons)


class ChecksSince(threading.Thread):
    """When each of `keys` first shows a check at or after `since` (status.pairing.lastCheckTime):
    one list, then a watch from it, listed again when the watch ends or fails. Polling with a list
    would cost the API server, which the operator is waiting on, N objects each time."""

    def __init__(self, kube, keys, since):
        super().__init__(daemon=True)
        self.kube, self.pending, self.since = kube, set(keys), since
        self.done_at = None
        self.stopped = threading.Event()

    def run(self):
        while self.pending and not self.stopped.is_set():
            try:
                items, resource_version = self.kube.list_root_keys()
                for obj in items:
                    self._seen(obj)
                _watch, events = self.kube.watch_root_keys(resource_version)
                for ev in events:
                    if ev["type"] == "ERROR" or not self.pending or self.stopped.is_set():
                        break  # ERROR: the resourceVersion is gone (410); list again
                    self._seen(ev["object"])
            except Exception:  # the API server still restarting
                time.sleep(0.2)

    def _seen(self, obj):
        md = obj["metadata"]
        if last_check_unix(obj) >= self.since:
            self.pending.discard(object_key(md))
            if not self.pending and self.done_at is None:
                self.done_at = time.monotonic()


def event_writes(kube) -> dict:
    """Event writes per AzureRootKey (an event with a series counts series.count writes)."""
    per = {}
    for e in kube.list_events():
        reg = e.get("regarding") or {}
        if reg.get("kind") != "AzureRootKey":
            continue
        k = object_key(reg)
        per[k] = per.get(k, 0) + max(1, (e.get("series") or {}).get("count", 1))
    return per


def settled_event_writes(kube, deadline, quiet_s=2.0) -> dict:
    """Event writes per object once no new event has appeared for `quiet_s` (or at the deadline)."""
    last = event_writes(kube)
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = event_writes(kube)
        if sum(now.values()) == sum(last.values()):
            return now
        last = now
    return last


# ------------------------------------------------------------------ remote calls


def operator_calls(metrics_port) -> dict:
    """{(service, operation, code): count} from the operator's /metrics."""
    _, body = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    out = {}
    for line in body.decode(errors="replace").splitlines():
        m = re.match(r"rootkey_operator_remote_calls_total\{(.*)\} (\d+)", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            out[(labels.get("service"), labels.get("operation"), labels.get("code"))] = int(m.group(2))
    return out


def sandbox_counters(admin_url) -> dict:
    """{(service, operation, status): count} of every call the sandbox answered."""
    _, body = http_get(f"{admin_url}/counters")
    out = {}
    for r in json.loads(body or b'{"counters":[]}')["counters"]:
        k = (r["service"], r["operation"], str(r["status"]))
        out[k] = out.get(k, 0) + r["count"]
    return out


def diff(before, after) -> dict:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def by_op(counts) -> dict:
    """{"service operation": count}, codes summed."""
    out = {}
    for (service, operation, _code), v in counts.items():
        out[f"{service} {operation}"] = out.get(f"{service} {operation}", 0) + v
    return dict(sorted(out.items()))


def own_sandbox_calls(counts) -> dict:
    """Sandbox counters minus the sandbox's own pairing-check calls (per rek.test: 1 entra token,
    1 hsm key.get, 1 hsm key.wrap, 1 hsm key.unwrap)."""
    ops = by_op(counts)
    tests = ops.get("antimatter rek.test", 0)
    for k in ("entra token", "hsm key.get", "hsm key.wrap", "hsm key.unwrap"):
        if k in ops:
            ops[k] -= tests
    return {k: v for k, v in ops.items() if v}


def pairing_checks_since(admin_url, before) -> int:
    """rek.test calls the sandbox answered since the `before` counters: one ends every check."""
    return by_op(diff(before, sandbox_counters(admin_url))).get("antimatter rek.test", 0)


def count_429(counts) -> int:
    return sum(v for (_s, _o, code), v in counts.items() if code == "429")


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100.0 * (len(s) - 1)))]
