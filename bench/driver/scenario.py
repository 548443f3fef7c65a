"""One run of the matrix: start everything fresh, apply N objects, measure, stop everything."""

from __future__ import annotations

import json
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from . import measure
from .config import PEER_SCRIPT, PROPAGATION_S, Config, RunSpec
from .kube import Kube
from .measure import Watcher, by_op, count_429, diff, own_sandbox_calls, sandbox_counters
from .processes import (
    Operator,
    Processes,
    Timeout,
    die_with_parent,
    http_send,
    start_control_plane,
    start_operator,
    start_sandbox,
    wait_until,
)
from .workload import API_KEY_SECRET, floor_seconds, manifest, namespaces, plan, probes
from .world import API_KEY

IDLE_SETTLE_S, CPU_SAMPLE_S = 3, 5  # wait before sampling memory, then measure CPU over this
PROBES = 3  # objects beyond N: one after the API-server restart, one after each leader handoff


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


class Run:
    def __init__(self, cfg: Config, spec: RunSpec, procs: Processes):
        self.cfg, self.spec, self.procs = cfg, spec, procs
        self.work = pathlib.Path(tempfile.mkdtemp(prefix=f"bench-{spec.id}-", dir=cfg.work_dir))
        self.objs = plan(spec.n)
        self.floor_s = floor_seconds(self.objs, spec.throttled, spec.latency_ms)
        # Hard bound for this run: generous multiple of the floor, plus room for applying N objects.
        self.budget_s = (
            120
            + 3 * (self.floor_s or 0)
            + spec.n * (0.05 if spec.latency_ms else 0.02)
            + (300 if spec.steady == "intervals" else 60)
        )
        self.deadline = time.monotonic() + self.budget_s
        self.kube: Kube | None = None
        self.watcher: Watcher | None = None
        self.endpoints: dict = {}
        self.kubeconfig: pathlib.Path | None = None
        self.controlplane: subprocess.Popen | None = None
        # Objects created after the first N, each to show the operator acting again.
        self.probes = iter(probes(spec.n, PROBES))

    def time_left(self, at_least, at_most):
        return max(at_least, min(at_most, self.deadline - time.monotonic()))

    def execute(self) -> dict:
        spec = self.spec
        log(f"=== run {spec.id}")
        res = {
            "id": spec.id,
            "n": spec.n,
            "latency_ms": spec.latency_ms,
            "throttled": spec.throttled,
            "concurrency": self.cfg.concurrency,
            "work_dir": str(self.work),
            "floor_s": self.floor_s,
            "budget_s": round(self.budget_s),
            "extras": sorted(spec.extras),
        }
        try:
            self._measure(res)
        except Timeout as e:
            res["complete"], res["error"] = False, str(e)
            log(f"!! {spec.id}: {e}")
        except Exception as e:
            res["complete"], res["error"] = False, f"{type(e).__name__}: {e}"
            log(f"!! {spec.id}: {res['error']}")
        finally:
            if self.watcher:
                self.watcher.stop()
            self.procs.stop_all()
        if spec.peer_n:
            res["peer"] = self._peer()
        summary = {
            k: res.get(k) for k in ("all_ready_s", "p50_s", "p99_s", "floor_s", "vs_floor", "peak_rss_mib", "error")
        }
        log(f"=== {spec.id}: " + json.dumps(summary, default=str))
        return res

    def _start_cluster(self):
        self.kubeconfig, self.controlplane = start_control_plane(self.procs, self.cfg, self.work)
        self.kube = Kube(self.kubeconfig, self.cfg.tools_dir, self.cfg.apply_threads)
        self.endpoints = start_sandbox(self.procs, self.cfg, self.work, self.spec.latency_ms, self.spec.throttled)
        self.kube.install_crd()
        for ns in namespaces():
            self.kube.create_namespace(ns)
            self.kube.create_secret(ns, API_KEY_SECRET, {"apiKey": API_KEY})
        wait_until(self.kube.root_keys_served, 30, "CRD served")

    def _start_operator(self, tag, leader_elect=False) -> Operator:
        return start_operator(
            self.procs, self.cfg, self.work, self.endpoints, self.kubeconfig, self.spec.throttled, tag, leader_elect
        )

    def _measure(self, res):
        self._start_cluster()
        n, kube, admin = self.spec.n, self.kube, self.endpoints["admin_url"]

        op = self._start_operator("a")
        res["startup_ms"] = op.startup_ms
        pid = op.process.pid
        mon = measure.MemMonitor(pid)
        mon.start()
        time.sleep(IDLE_SETTLE_S)
        res["idle_cpu_pct"] = measure.cpu_percent(pid, CPU_SAMPLE_S)
        res["idle_rss_mib"] = measure.rss_mib(pid)

        if "prop20" in self.spec.extras:
            http_send("PATCH", f"{admin}/settings", {"rbac_propagation_secs": PROPAGATION_S})
        _, rv = kube.list_root_keys()
        w = self.watcher = Watcher(kube, rv)
        w.start()
        calls0, sb0 = measure.operator_calls(op.metrics_port), sandbox_counters(admin)
        applied = {}
        # Only the "intervals" mode waits for real checks; otherwise a long interval keeps scheduled
        # checks of early objects out of the first-reconcile and per-poke counts of long runs.
        check_interval = "1m" if self.spec.steady == "intervals" else "1h"

        def create(o):
            kube.create_root_key(manifest(o, self.endpoints, check_interval))
            applied[f"{o['ns']}/{o['name']}"] = time.monotonic()

        # The client's first create builds its request validation (0.15-0.2 s of CPU measured with 100
        # creates on 16 threads): a server-side dry run (nothing stored, nothing watched) pays for it
        # before the timed apply, which is to measure the API server and the operator.
        kube.create_root_key(manifest(self.objs[0], self.endpoints, check_interval), dry_run=True)
        apiserver_cpu0, sandbox_cpu0, operator_cpu0 = kube.cpu_seconds(), *self._cpu(op)
        requests0 = kube.request_counts()
        t_apply = time.monotonic()
        with ThreadPoolExecutor(self.cfg.apply_threads) as pool:
            list(pool.map(create, self.objs))
        res["apply_s"] = time.monotonic() - t_apply
        log(f"applied {n} objects in {res['apply_s']:.1f}s; waiting for Ready (floor {self.floor_s})")

        last_progress = [time.monotonic()]

        def all_ready():
            if time.monotonic() > self.deadline:
                raise Timeout("run budget exhausted")
            if w.error and not w.is_alive():
                raise RuntimeError(w.error)
            ready = w.ready_count()
            if time.monotonic() - last_progress[0] > 10:
                log(f"  {ready}/{n} Ready, {time.monotonic() - t_apply:.0f}s")
                last_progress[0] = time.monotonic()
            return ready >= n

        try:
            wait_until(all_ready, max(1, self.deadline - time.monotonic()), "all Ready", interval_s=0.02)
            res["complete"] = True
        except Timeout as e:
            res["complete"] = False
            res["error"] = str(e)
        self._record_latencies(res, applied, t_apply)

        # Events trail the status writes (the operator publishes them in the background): wait until
        # they stop arriving, so the per-object counts below are complete.
        ev = measure.settled_event_writes(kube, self.deadline)
        apiserver_cpu = kube.cpu_seconds() - apiserver_cpu0
        requests = diff(requests0, kube.request_counts())
        sandbox_cpu, operator_cpu = (b - a for a, b in zip((sandbox_cpu0, operator_cpu0), self._cpu(op)))
        phase_s = time.monotonic() - t_apply
        op_calls = diff(calls0, measure.operator_calls(op.metrics_port))
        sb_calls = diff(sb0, sandbox_counters(admin))
        own = own_sandbox_calls(sb_calls)
        modified, events = w.modified_total(), sum(ev.values())
        res["first"] = {
            "operator_calls_by_op": by_op(op_calls),
            "operator_calls_per_object": sum(op_calls.values()) / n,
            "sandbox_calls_by_op_excl_pairing_internal": own,
            "sandbox_calls_per_object_excl_pairing_internal": sum(own.values()) / n,
            "operator_calls_per_object_excl_token": sum(v for (s, _o, _c), v in op_calls.items() if s != "entra") / n,
            "http_429_sandbox": count_429(sb_calls),
            "http_429_operator_seen": count_429(op_calls),
            "operator_token_requests": sum(v for (s, o, _c), v in op_calls.items() if s == "entra" and o == "token"),
            "apiserver_writes_per_object": (modified + events) / n,
            "status_or_metadata_patches_per_object": modified / n,
            "event_writes_per_object": events / n,
            # Includes serving the driver's own watch and the list that counts events.
            "apiserver_cpu_s_per_1000_objects": apiserver_cpu / n * 1000,
            # Everyone's requests, the driver's included (its creates, watch and event lists).
            "apiserver_requests_per_object": {k: v / n for k, v in sorted(requests.items())},
            # From the first apply until events stopped: who used the two cores.
            "cpu_s": {"apiserver": apiserver_cpu, "operator": operator_cpu, "sandbox": sandbox_cpu, "wall": phase_s},
            "tokens_note": "1 tenant x 2 scopes (Managed HSM audience, Graph): each needs >= 1 token, "
            "so a total of 2 means exactly 1 per (tenant, scope)",
        }

        time.sleep(IDLE_SETTLE_S)
        res["settled_rss_mib"] = measure.rss_mib(pid)
        res["settled_cpu_pct"] = measure.cpu_percent(pid, CPU_SAMPLE_S)

        if self.spec.steady and res["complete"]:
            res["steady"] = self._steady_state(op, ev)

        res["peak_rss_mib"] = mon.peak_mib()
        res["cpu_s_total"] = measure.cpu_seconds(pid)
        mon.stopped.set()

        if "restart" in self.spec.extras and res["complete"]:
            res["restart"] = self._apiserver_restart(op)

        if self.cfg.relist and res["complete"]:
            res["relist"] = self._relist(op)

        if "handoff" in self.spec.extras and res["complete"]:
            self.procs.stop(op.process)
            res["handoff"] = self._handoff()

        if "alone" in self.spec.extras and res["complete"]:
            self.procs.stop(op.process)
            res["alone"] = self._apiserver_alone()

    def _apiserver_alone(self) -> dict:
        """What the API server spends on a run's writes without the operator: the driver makes them
        itself, with no operator running; beside the run's own watch a second one stands in for
        the operator's, which the run with it also served. N more objects in namespaces of their
        own, created; each given one server-side apply of a Ready object's status and one Event, the
        writes the operator makes for a new object. API-server CPU and requests per kind."""
        kube, n = self.kube, self.spec.n
        first = self.objs[0]
        status = kube.get_root_key(first["ns"], first["name"])["status"]
        objs = [{**o, "ns": f"alone-{o['ns']}"} for o in self.objs]
        for ns in sorted({o["ns"] for o in objs}):
            kube.create_namespace(ns)
        _, rv = kube.list_root_keys()
        w = Watcher(kube, rv)
        w.start()
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())

        def event(o):
            return {
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"generateName": f"{o['name']}."},
                "eventTime": now,
                "reportingController": "antimatter.io/rootkey-operator",
                "reportingInstance": "bench-alone",
                "action": "Reconcile",
                "reason": "Changed",
                "type": "Normal",
                "note": "bench: the API server alone",
                "regarding": {
                    "apiVersion": "antimatter.io/v1alpha1",
                    "kind": "AzureRootKey",
                    "namespace": o["ns"],
                    "name": o["name"],
                },
            }

        writes = (
            ("create", lambda o: kube.create_root_key(manifest(o, self.endpoints, "1h"))),
            ("status apply", lambda o: kube.apply_root_key_status(o["ns"], o["name"], status, "bench-alone")),
            ("event", lambda o: kube.create_event(o["ns"], event(o))),
        )
        out = {}
        for what, write in writes:
            cpu0, requests0, t0 = kube.cpu_seconds(), kube.request_counts(), time.monotonic()
            with ThreadPoolExecutor(self.cfg.apply_threads) as pool:
                list(pool.map(write, objs))
            took = time.monotonic() - t0
            out[what] = {
                "s": took,
                "apiserver_cpu_s_per_1000_objects": (kube.cpu_seconds() - cpu0) / n * 1000,
                "apiserver_requests_per_object": {
                    k: v / n for k, v in sorted(diff(requests0, kube.request_counts()).items())
                },
            }
            cpu = out[what]["apiserver_cpu_s_per_1000_objects"]
            log(f"  API server alone, {n} x {what}: {took:.1f}s, {cpu:.1f} CPU s/1000")
        w.stop()
        return out

    def _cpu(self, op: Operator) -> tuple[float, float]:
        """CPU seconds so far of (the sandbox, the operator)."""
        return measure.cpu_seconds(self.endpoints["pid"]), measure.cpu_seconds(op.process.pid)

    def _create_probe(self):
        """Creates the next object beyond the first N; returns a check that it is Ready."""
        o = next(self.probes)
        self.kube.create_root_key(manifest(o, self.endpoints, "1h"))
        return lambda: measure.ready_status(self.kube.get_root_key(o["ns"], o["name"]) or {})[0] == "True"

    def _apiserver_restart(self, op: Operator) -> dict:
        """The API server restarted (etcd kept) just after every object was poked, so checks and
        status writes are in flight: how long after /readyz is back the operator acts on a new
        object, and has written every poked object's check; and who used the CPU meanwhile."""
        kube = self.kube
        poked_at = int(time.time())  # status times have one-second resolution
        with ThreadPoolExecutor(8) as pool:
            stamp = {"bench/restart": str(poked_at)}
            list(pool.map(lambda o: kube.annotate_root_key(o["ns"], o["name"], stamp), self.objs))
        self.controlplane.send_signal(signal.SIGHUP)
        t_signal = time.monotonic()
        wait_until(lambda: not kube.ready(), 30, "API server down", interval_s=0.01)
        t_down = time.monotonic()
        wait_until(kube.ready, 120, "API server back", interval_s=0.02)
        t_back = time.monotonic()
        log(f"  API server down {t_back - t_down:.1f}s; waiting for the operator")
        cpu_back, requests_back = (kube.cpu_seconds(), *self._cpu(op)), kube.request_counts()
        checks = measure.ChecksSince(kube, (f"{o['ns']}/{o['name']}" for o in self.objs), poked_at)
        checks.start()
        probe_ready = self._create_probe()
        wait_until(probe_ready, 60, "a new object Ready after the restart", interval_s=0.02)
        t_probe = time.monotonic()
        try:
            wait_until(lambda: checks.done_at, 120, "every poked object re-checked after the restart", interval_s=0.02)
        finally:
            checks.stopped.set()
        cpu = [b - a for a, b in zip(cpu_back, (kube.cpu_seconds(), *self._cpu(op)))]
        return {
            "down_s": t_back - t_down,
            "signal_to_down_s": t_down - t_signal,
            "new_object_ready_after_back_s": t_probe - t_back,
            "all_rechecked_after_back_s": checks.done_at - t_back,
            # From /readyz back until every check was written (sampled up to 20 ms after).
            "cpu_s": dict(zip(("apiserver", "sandbox", "operator"), cpu), wall=time.monotonic() - t_back),
            # Everyone's, the driver's included (the probe's GETs, one list and a watch).
            "apiserver_requests": diff(requests_back, kube.request_counts()),
        }

    def _handoff(self) -> dict:
        """Two replicas with leader election: the leader stopped by SIGTERM (it releases the Lease on
        the way out) and then killed by SIGKILL (the standby waits for the lease to lapse). For
        each: signal to the standby holding the Lease, and to a new object Ready."""
        kube, out = self.kube, {}
        leader = self._start_operator("leader-0", leader_elect=True)
        wait_until(lambda: kube.lease_holder() == "operator-leader-0", 30, "first leader", interval_s=0.05)
        for i, (how, sig) in enumerate((("sigterm", signal.SIGTERM), ("sigkill", signal.SIGKILL)), start=1):
            tag = f"leader-{i}"
            standby = self._start_operator(tag, leader_elect=True)
            time.sleep(2)  # the standby has read the Lease (it retries every second)
            t0 = time.monotonic()
            leader.process.send_signal(sig)
            holder = f"operator-{tag}"
            wait_until(lambda h=holder: kube.lease_holder() == h, 40, f"takeover after {how}", interval_s=0.02)
            taken = time.monotonic() - t0
            probe_ready = self._create_probe()
            wait_until(probe_ready, 60, f"a new object Ready after {how}", interval_s=0.02)
            out[how] = {"lease_taken_s": taken, "new_object_ready_s": time.monotonic() - t0}
            log(f"  handoff on {how}: Lease taken after {taken:.2f}s")
            self.procs.stop(leader.process)
            leader = standby
        self.procs.stop(leader.process)
        return out

    def _record_latencies(self, res, applied, t_apply):
        n = self.spec.n
        ready_at, reasons = self.watcher.snapshot()
        t_last = max(ready_at.values()) if ready_at else None
        lat = [ready_at[k] - applied[k] for k in ready_at if k in applied]
        res["ready"] = len(ready_at)
        res["all_ready_s"] = (t_last - t_apply) if (t_last and res["complete"]) else None
        res["p50_s"], res["p99_s"] = measure.pct(lat, 50), measure.pct(lat, 99)
        res["max_s"] = max(lat) if lat else None
        res["objects_per_s"] = (n / res["all_ready_s"]) if res["all_ready_s"] else None
        if self.floor_s and res["all_ready_s"]:
            res["vs_floor"] = res["all_ready_s"] / self.floor_s
        if n == 1 and lat:
            res["one_object_s"] = lat[0]
            res["one_object_vs_bound"] = lat[0] / self.floor_s if self.floor_s else None
        not_ready = {}
        for k, (_status, reason) in reasons.items():
            if k not in ready_at:
                not_ready[reason] = not_ready.get(reason, 0) + 1
        res["not_ready_reasons"] = not_ready

    def _steady_state(self, op: Operator, ev_before) -> dict:
        """Calls and writes with nothing changed: either one annotation poke per object ("poke"), or
        two checkInterval periods (1m ±10 %) observed ("intervals")."""
        n, kube, w, admin = self.spec.n, self.kube, self.watcher, self.endpoints["admin_url"]
        mod0 = w.modified_total()
        calls0, sb0 = measure.operator_calls(op.metrics_port), sandbox_counters(admin)
        t0 = time.monotonic()
        if self.spec.steady == "poke":
            stamp = str(time.time())
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda o: kube.annotate_root_key(o["ns"], o["name"], {"bench/poke": stamp}), self.objs))
            pokes = 1
            # Every object's check ends with one pairing check: wait for n of them, then for quiet.
            wait_until(
                lambda: measure.pairing_checks_since(admin, sb0) >= n,
                self.time_left(5, 120),
                "steady-state pairing checks",
                interval_s=0.2,
            )
            time.sleep(2)
            intervals = 1.0
        else:
            observe = 130.0
            log(f"  observing steady state for {observe:.0f}s (checkInterval 1m)")
            time.sleep(observe)
            pokes = 0
            intervals = observe / 60.0
        calls = by_op(diff(calls0, measure.operator_calls(op.metrics_port)))
        sb = diff(sb0, sandbox_counters(admin))
        status_patches = w.modified_total() - mod0 - pokes * n
        per = {k: v / n / intervals for k, v in calls.items()}
        hsm_reads = sum(
            v
            for k, v in per.items()
            if k.startswith("hsm ")
            and any(x in k for x in ("key.get", "rbac.assignment.get", "key.versions", "rbac.definition"))
        )
        writes = ("key.create", "key.update", "assignment.put", "assignment.delete", "sp.create", "keys.add")
        writes += ("keys.delete", "active.set")
        return {
            "mode": self.spec.steady,
            "observed_s": time.monotonic() - t0,
            "intervals": intervals,
            "operator_calls_per_object_per_interval": per,
            "hsm_reads_per_object_per_interval": hsm_reads,
            "pairing_checks_per_object_per_interval": per.get("antimatter keys.test", 0.0),
            "antimatter_calls_per_object_per_interval": sum(v for k, v in per.items() if k.startswith("antimatter ")),
            "graph_calls": sum(v for k, v in calls.items() if k.startswith("graph ")),
            "remote_writes": sum(v for k, v in calls.items() if any(x in k for x in writes)),
            "status_patches": status_patches,
            "event_writes": sum(measure.event_writes(kube).values()) - sum(ev_before.values()),
            "sandbox_calls_excl_pairing_internal": own_sandbox_calls(sb),
            "http_429_sandbox": count_429(sb),
        }

    def _relist(self, old: Operator) -> dict:
        """Restart the operator process: its peak while listing N objects and re-checking each once."""
        n, kube, w, admin = self.spec.n, self.kube, self.watcher, self.endpoints["admin_url"]
        self.procs.stop(old.process)
        mod0 = w.modified_total()
        ev0 = measure.event_writes(kube)
        sb0 = sandbox_counters(admin)
        op = self._start_operator("b")
        mon = measure.MemMonitor(op.process.pid)
        mon.start()
        t0 = time.monotonic()
        try:
            wait_until(
                lambda: measure.pairing_checks_since(admin, sb0) >= n,
                self.time_left(5, 600),
                "relist re-checks",
                interval_s=0.2,
            )
            done = True
        except Timeout:
            done = False
        took = time.monotonic() - t0
        time.sleep(IDLE_SETTLE_S)
        settled = measure.rss_mib(op.process.pid)
        out = {
            "startup_ms": op.startup_ms,
            "recheck_s": took,
            "complete": done,
            "peak_rss_mib": mon.peak_mib(),
            "settled_rss_mib": settled,
            "status_patches": w.modified_total() - mod0,
            "event_writes": sum(measure.event_writes(kube).values()) - sum(ev0.values()),
            "sandbox_calls_per_object": sum(own_sandbox_calls(diff(sb0, sandbox_counters(admin))).values()) / n,
        }
        mon.stopped.set()
        self.procs.stop(op.process)
        return out

    def _peer(self) -> dict:
        """The straight-line script (bench/peer.py) against a fresh sandbox, one key at a time."""
        cfg, n = self.cfg, self.spec.peer_n
        if not cfg.peer_python:
            return {"skipped": "no Python with the Azure SDK (set --peer-python)"}
        log(f"peer script: {n} keys, one at a time")
        pw = self.work / "peer"
        pw.mkdir(exist_ok=True)
        try:
            ep = start_sandbox(self.procs, cfg, pw, self.spec.latency_ms, self.spec.throttled)
            (pw / "ep.json").write_text(json.dumps(ep))
            (pw / "plan.json").write_text(json.dumps(plan(n)))
            argv = [cfg.peer_python, str(PEER_SCRIPT), str(pw / "ep.json"), str(pw / "plan.json")]
            r = subprocess.run(
                argv, capture_output=True, text=True, timeout=cfg.peer_timeout_s, preexec_fn=die_with_parent
            )
            if r.returncode != 0:
                return {"error": r.stderr[-1500:]}
            out = json.loads(r.stdout.strip().splitlines()[-1])
            out["sandbox_calls"] = own_sandbox_calls(sandbox_counters(ep["admin_url"]))
            out["sandbox_calls_per_key"] = sum(out["sandbox_calls"].values()) / n
            return out
        except subprocess.TimeoutExpired:
            return {"error": f"peer timed out after {cfg.peer_timeout_s}s"}
        except Exception as e:
            return {"error": f"{type(e).__name__}: {e}"}
        finally:
            self.procs.stop_all()
