"""The results: judged against the targets, written as JSON, Markdown and an SVG chart."""

from __future__ import annotations

import json
import math
import os
import time

from .config import PROPAGATION_S
from .measure import pct
from .workload import CRITICAL_PATH_CALLS

# The second round's targets (issue 19); the first round's are in git history.
TARGETS = {
    "throttled_1000_vs_floor": 1.05,
    "unthrottled_20ms_1000_s": 5,
    "unthrottled_20ms_10000_s": 50,
    "one_object_vs_bound": 1.2,
    "first_reconcile_calls_per_object": 7,
    "first_reconcile_writes_per_object": 2,
    "tokens_per_tenant_scope": 1,
    "idle_mib": 20,
    "mib_1000": 40,
    "mib_10000": 56,
    "settled_mib_10000": 40,
    "restart_recovery_s": 5,
    "handoff_sigterm_s": 2,
    "handoff_sigkill_s": 17,  # the lease's 15 s + 2 s
    "propagation_extra_s": 3,
    "relist_vs_settled": 1.5,
    "idle_cpu_pct": 1.0,
    "startup_ms": 200,
    "binary_mb": 30,
    "peer_speedup_100": 20,
}


def fmt(v, d=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{d}f}"
    return str(v)


def judge(results, binary):
    """Every target, with the measured figure and met/missed (never judged in quick mode's exit code)."""
    t = {k: f"{v:g}" for k, v in TARGETS.items()}  # as the goals print them
    rows = []

    def add(name, measured, goal, ok):
        rows.append({"target": name, "measured": measured, "goal": goal, "met": None if ok is None else bool(ok)})

    def find(n, lat, thr):
        return next((r for r in results if r["n"] == n and r["latency_ms"] == lat and r["throttled"] == thr), None)

    for r in results:
        if "prop20" in r.get("extras", ()) and r.get("all_ready_s") is not None:
            extra = r["all_ready_s"] - PROPAGATION_S
            add(
                f"one object with {PROPAGATION_S} s RBAC propagation ({r['id']})",
                f"{fmt(r['all_ready_s'], 1)}s (propagation + {fmt(extra, 1)}s)",
                f"<= propagation + {t['propagation_extra_s']}s",
                extra <= TARGETS["propagation_extra_s"],
            )
    for r in results:
        f = r.get("first")
        if f and r["n"] >= 100:
            add(
                f"API-server writes/object, first reconcile ({r['id']})",
                f"{fmt(f['apiserver_writes_per_object'])} ({fmt(f['status_or_metadata_patches_per_object'])} object "
                f"patches + {fmt(f['event_writes_per_object'])} events)",
                f"<= {t['first_reconcile_writes_per_object']}",
                f["apiserver_writes_per_object"] <= TARGETS["first_reconcile_writes_per_object"] + 0.005,
            )
    for r in results:
        rs = r.get("restart")
        if rs:
            add(
                f"API server restarted under load ({r['id']}): a new object Ready after it is back",
                f"{fmt(rs['new_object_ready_after_back_s'])}s (all {r['n']} poked objects re-checked "
                f"{fmt(rs['all_rechecked_after_back_s'])}s after; down {fmt(rs['down_s'], 1)}s)",
                f"<= {t['restart_recovery_s']}s",
                rs["new_object_ready_after_back_s"] <= TARGETS["restart_recovery_s"],
            )
        ho = r.get("handoff")
        if ho:
            for how, key in (("sigterm", "handoff_sigterm_s"), ("sigkill", "handoff_sigkill_s")):
                h = ho[how]
                add(
                    f"leader handoff on {how.upper()} ({r['id']})",
                    f"Lease taken {fmt(h['lease_taken_s'])}s after the signal, a new object Ready "
                    f"{fmt(h['new_object_ready_s'])}s after it",
                    f"<= {t[key]}s",
                    h["lease_taken_s"] <= TARGETS[key],
                )
    for lat in sorted({r["latency_ms"] for r in results}):
        r = find(1000, lat, True)
        if r:
            add(
                f"throttled N=1000 @{lat}ms all Ready vs floor",
                f"{fmt(r.get('vs_floor'))}x ({fmt(r.get('all_ready_s'), 1)}s / {fmt(r.get('floor_s'), 0)}s), "
                f"429s={r.get('first', {}).get('http_429_sandbox')}",
                f"<= {t['throttled_1000_vs_floor']}x, 0 429s",
                r.get("vs_floor") is not None
                and r["vs_floor"] <= TARGETS["throttled_1000_vs_floor"]
                and r["first"]["http_429_sandbox"] == 0,
            )
    for n, key in ((1000, "unthrottled_20ms_1000_s"), (10000, "unthrottled_20ms_10000_s")):
        r = find(n, 20, False)
        if r:
            add(
                f"unthrottled 20ms N={n} all Ready",
                f"{fmt(r.get('all_ready_s'), 1)}s",
                f"<= {t[key]}s",
                r.get("all_ready_s") is not None and r["all_ready_s"] <= TARGETS[key],
            )
    for r in results:
        a, f = r.get("alone"), r.get("first")
        if a and f:
            total = f["apiserver_cpu_s_per_1000_objects"]
            floor = alone_cpu(a)
            # Not judged here: the first round's figure was never taken by this driver. The same
            # writes made without the operator show what any operator making them costs.
            add(
                f"API-server CPU s per 1000 objects ({r['id']})",
                f"{fmt(total, 1)} (the same create, status apply and event per object, made by the driver "
                f"with no operator: {fmt(floor, 1)})",
                "reported; <= half of the first round's",
                None,
            )
    for r in results:
        if r["n"] == 1 and r.get("latency_ms") and not r.get("extras"):
            add(
                f"one object @{r['latency_ms']}ms vs critical path ({CRITICAL_PATH_CALLS} calls)",
                f"{fmt(r.get('one_object_vs_bound'))}x ({fmt(r.get('one_object_s'), 3)}s)",
                f"<= {t['one_object_vs_bound']}x",
                r.get("one_object_vs_bound") is not None and r["one_object_vs_bound"] <= TARGETS["one_object_vs_bound"],
            )
    for r in results:
        f = r.get("first")
        if f and r["n"] >= 100:
            calls = f["operator_calls_per_object_excl_token"]
            add(
                f"first reconcile calls/object ({r['id']})",
                f"{fmt(calls)} (+tokens: {fmt(f['operator_calls_per_object'])})",
                f"<= {t['first_reconcile_calls_per_object']}",
                calls <= TARGETS["first_reconcile_calls_per_object"],
            )
            scopes = 2  # the Managed HSM audience and Graph, in one tenant
            add(
                f"token requests ({r['id']})",
                f"{f['operator_token_requests']} for 1 tenant x {scopes} scopes",
                f"<= {t['tokens_per_tenant_scope']} per (tenant, scope)",
                f["operator_token_requests"] <= TARGETS["tokens_per_tenant_scope"] * scopes,
            )
    for r in results:
        s = r.get("steady")
        if s:
            patches = s["status_patches"] / r["n"] / s["intervals"]
            ok = (
                s["hsm_reads_per_object_per_interval"] <= 2.0001
                and s["pairing_checks_per_object_per_interval"] <= 1.0001
                and s["graph_calls"] == 0
                and s["remote_writes"] == 0
                # status.pairing.lastCheckTime: one status write per object per check, no more.
                and patches <= 1.0001
                and s["event_writes"] == 0
            )
            add(
                f"steady state ({r['id']}, {s['mode']})",
                f"HSM reads {fmt(s['hsm_reads_per_object_per_interval'])}, "
                f"pairing {fmt(s['pairing_checks_per_object_per_interval'])}, Graph {s['graph_calls']}, "
                f"writes {s['remote_writes']}, status patches/object {fmt(patches)}, "
                f"events {s['event_writes']}",
                "<= 2 HSM reads, <= 1 pairing, 0 Graph, 0 writes, <= 1 status patch, 0 events",
                ok,
            )
    idle = [r["idle_rss_mib"] for r in results if r.get("idle_rss_mib")]
    if idle:
        add("memory idle", f"{fmt(max(idle), 1)} MiB", f"<= {t['idle_mib']} MiB", max(idle) <= TARGETS["idle_mib"])
    for n, key in ((1000, "mib_1000"), (10000, "mib_10000")):
        # The peak includes the relist: the restarted operator's, as it lists and re-checks everything.
        rs = [r for r in results if r["n"] == n and r.get("peak_rss_mib")]
        if rs:
            m, where = max(
                (p, f"{r['id']}{' relist' if i else ''}")
                for r in rs
                for i, p in enumerate((r["peak_rss_mib"], (r.get("relist") or {}).get("peak_rss_mib")))
                if p
            )
            add(f"memory peak N={n} (with relist)", f"{fmt(m, 1)} MiB ({where})", f"<= {t[key]} MiB", m <= TARGETS[key])
    settled = [r for r in results if r["n"] == 10000 and r.get("settled_rss_mib")]
    if settled:
        big = max(settled, key=lambda r: (r["settled_rss_mib"], r["id"]))
        m, goal = big["settled_rss_mib"], TARGETS["settled_mib_10000"]
        add(
            "memory settled N=10000",
            f"{fmt(m, 1)} MiB ({big['id']}{per_object_growth(results, big)})",
            f"<= {t['settled_mib_10000']} MiB",
            m <= goal,
        )
    for r in results:
        rl = r.get("relist")
        if rl and r.get("settled_rss_mib"):
            ratio = rl["peak_rss_mib"] / r["settled_rss_mib"]
            add(
                f"relist peak vs settled ({r['id']}, operator restart)",
                f"{fmt(ratio)}x ({fmt(rl['peak_rss_mib'], 1)} / {fmt(r['settled_rss_mib'], 1)} MiB)",
                f"<= {t['relist_vs_settled']}x",
                ratio <= TARGETS["relist_vs_settled"],
            )
    cpu = [r["idle_cpu_pct"] for r in results if r.get("idle_cpu_pct") is not None]
    if cpu:
        goal = f"< {t['idle_cpu_pct']} %"
        add("idle CPU", f"{fmt(max(cpu), 2)} % of a core", goal, max(cpu) < TARGETS["idle_cpu_pct"])
    st = [r["startup_ms"] for r in results if r.get("startup_ms")]
    if st:
        add(
            "start-up to /readyz",
            f"{fmt(max(st), 0)} ms (median {fmt(pct(st, 50), 0)})",
            f"< {t['startup_ms']} ms",
            max(st) < TARGETS["startup_ms"],
        )
    add(
        "release binary",
        f"{fmt(binary['mb'], 1)} MB, {binary['linkage']}",
        f"< {t['binary_mb']} MB static",
        binary["mb"] < TARGETS["binary_mb"] and binary["static"],
    )
    speedup = TARGETS["peer_speedup_100"]
    for r in results:
        p = r.get("peer")
        if p and "seconds" in p and r.get("all_ready_s"):
            peer_n = p["n"]
            script_s = p["seconds"] / peer_n * r["n"]
            speed = script_s / r["all_ready_s"]
            measured = (
                f"{fmt(speed, 1)}x sooner (script {fmt(p['per_key_seconds'], 3)} s/key, "
                f"operator {fmt(r['all_ready_s'] / r['n'], 4)} s/object)"
            )
            # Under Azure's limits no operator can beat the floor: when even the floor is not 20x
            # sooner than the script, the run shows the limits, not the operator (not judged).
            best = script_s / r["floor_s"] if r.get("throttled") and r.get("floor_s") else None
            if best is not None and best < speedup:
                measured += f"; Azure's floor ({fmt(r['floor_s'], 1)} s) allows at most {fmt(best, 1)}x"
            judged = r["n"] == 100 and (best is None or best >= speedup)
            add(
                f"operator vs script ({r['id']}; script N={peer_n})",
                measured,
                f">= {t['peer_speedup_100']}x at N=100",
                speed >= speedup if judged else None,
            )
    return rows


def svg_chart(results, path):
    W, H, L, R, T, B = 760, 440, 70, 200, 30, 50
    pts = [r for r in results if r.get("all_ready_s")]
    if not pts:
        path.write_text(
            '<svg xmlns="http://www.w3.org/2000/svg" width="300" height="40"><text x="10" y="25">no data</text></svg>'
        )
        return
    ns = sorted({r["n"] for r in results})
    ys = [r["all_ready_s"] for r in pts] + [r["floor_s"] for r in results if r.get("floor_s")]
    ymin = 10 ** math.floor(math.log10(max(min(ys), 1e-3)))
    ymax = 10 ** math.ceil(math.log10(max(ys)))
    xmin, xmax = math.log10(max(min(ns), 1)), math.log10(max(max(ns), 10))
    if xmax == xmin:
        xmax += 1

    def X(n):
        return L + (math.log10(max(n, 1)) - xmin) / (xmax - xmin) * (W - L - R)

    def Y(v):
        return T + (1 - (math.log10(max(v, ymin)) - math.log10(ymin)) / (math.log10(ymax) - math.log10(ymin))) * (
            H - T - B
        )

    def polyline(rs, key, color, style):
        points = " ".join(f"{X(r['n']):.1f},{Y(r[key]):.1f}" for r in rs)
        return f'<polyline fill="none" stroke="{color}" {style} points="{points}"/>'

    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{L}" y="18" font-size="14">Time from first apply to all Ready vs N (log-log); dashed: floor</text>',
    ]
    e = math.log10(ymin)
    while e <= math.log10(ymax) + 1e-9:
        y = Y(10**e)
        out.append(
            f'<line x1="{L}" x2="{W - R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="{L - 6}" y="{y + 4:.1f}" text-anchor="end">{10**e:g} s</text>'
        )
        e += 1
    for n in ns:
        x = X(n)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{T}" y2="{H - B}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{H - B + 16}" text-anchor="middle">{n:,}</text>'
        )
    out.append(f'<text x="{(L + W - R) / 2}" y="{H - 12}" text-anchor="middle">N objects</text>')
    series = sorted({(r["latency_ms"], r["throttled"]) for r in results})
    for i, (lat, thr) in enumerate(series):
        c = colors[i % len(colors)]
        same = [r for r in results if r["latency_ms"] == lat and r["throttled"] == thr and not r.get("extras")]
        rs = sorted(same, key=lambda r: r["n"])
        got = [r for r in rs if r.get("all_ready_s")]
        if got:
            out.append(polyline(got, "all_ready_s", c, 'stroke-width="2"'))
            for r in got:
                out.append(f'<circle cx="{X(r["n"]):.1f}" cy="{Y(r["all_ready_s"]):.1f}" r="3.5" fill="{c}"/>')
        fl = [r for r in rs if r.get("floor_s")]
        if fl:
            out.append(polyline(fl, "floor_s", c, 'stroke-width="1.5" stroke-dasharray="5,4"'))
        ly = T + 20 + i * 36
        label = f"{lat} ms, {'throttled' if thr else 'unthrottled'}"
        out.append(
            f'<line x1="{W - R + 12}" x2="{W - R + 40}" y1="{ly}" y2="{ly}" stroke="{c}" stroke-width="2"/>'
            f'<text x="{W - R + 46}" y="{ly + 4}">{label}</text>'
        )
        if fl:
            out.append(
                f'<line x1="{W - R + 12}" x2="{W - R + 40}" y1="{ly + 15}" y2="{ly + 15}" stroke="{c}" '
                f'stroke-dasharray="5,4"/><text x="{W - R + 46}" y="{ly + 19}">floor</text>'
            )
    out.append("</svg>")
    path.write_text("\n".join(out))


COLUMNS = (
    "run", "N", "apply s", "all Ready s", "floor s", "×floor", "p50 s", "p99 s", "max s", "obj/s", "429s",
    "calls/obj (+tok)", "tokens", "writes/obj", "RSS idle/peak/settled MiB", "CPU s", "API-server CPU s/1000 obj",
    "startup ms",
)  # fmt: skip


def table_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def run_row(r) -> str:
    f = r.get("first") or {}
    incomplete = "" if r.get("complete") else " **(incomplete: " + str(r.get("error", "")) + ")**"
    rss = (fmt(r.get(k), 1) for k in ("idle_rss_mib", "peak_rss_mib", "settled_rss_mib"))
    return table_row(
        [
            r["id"] + incomplete,
            str(r["n"]),
            fmt(r.get("apply_s"), 1),
            fmt(r.get("all_ready_s"), 2),
            fmt(r.get("floor_s"), 2),
            fmt(r.get("vs_floor")),
            fmt(r.get("p50_s"), 3),
            fmt(r.get("p99_s"), 3),
            fmt(r.get("max_s"), 3),
            fmt(r.get("objects_per_s"), 1),
            fmt(f.get("http_429_sandbox")),
            f"{fmt(f.get('operator_calls_per_object_excl_token'))} (+{fmt(f.get('operator_token_requests'))})",
            fmt(f.get("operator_token_requests")),
            fmt(f.get("apiserver_writes_per_object")),
            " / ".join(rss),
            fmt(r.get("cpu_s_total"), 2),
            fmt(f.get("apiserver_cpu_s_per_1000_objects"), 1),
            fmt(r.get("startup_ms"), 0),
        ]
    )


def requests_text(per_object) -> str:
    """API-server requests per object, the ones that print as at least 0.01."""
    return ", ".join(f"{k} {v:.2f}" for k, v in per_object.items() if v >= 0.005) or "none"


def first_line(r, f):
    per = ", ".join(f"{k} {v / r['n']:.2f}" for k, v in f["operator_calls_by_op"].items())
    return (
        f": {per}; writes/object: {fmt(f['status_or_metadata_patches_per_object'])} object "
        f"patches + {fmt(f['event_writes_per_object'])} events"
        + (
            f"; API-server requests/object (everyone's): {requests_text(f['apiserver_requests_per_object'])}"
            if "apiserver_requests_per_object" in f
            else ""
        )
        + (
            f"; CPU s from the first apply to the last event ({fmt(f['cpu_s']['wall'], 1)} s): API server "
            f"{fmt(f['cpu_s']['apiserver'], 1)}, operator {fmt(f['cpu_s']['operator'], 1)}, "
            f"sandbox {fmt(f['cpu_s']['sandbox'], 1)}"
            if f.get("cpu_s")
            else ""
        )
    )


def steady_line(_r, s):
    per = ", ".join(f"{k} {v:.2f}" for k, v in s["operator_calls_per_object_per_interval"].items())
    return (
        f" ({s['mode']}, {fmt(s['intervals'])} interval(s), {fmt(s['observed_s'], 0)} s): "
        f"per object per interval {per}; Graph calls {s['graph_calls']}, remote writes {s['remote_writes']}, "
        f"status patches {s['status_patches']}, event writes {s['event_writes']}, "
        f"429s {s['http_429_sandbox']}"
    )


def relist_line(r, rl):
    return (
        f": start-up {fmt(rl['startup_ms'], 0)} ms, "
        f"all re-checked in {fmt(rl['recheck_s'], 1)} s, peak {fmt(rl['peak_rss_mib'], 1)} MiB, "
        f"settled {fmt(rl['settled_rss_mib'], 1)} MiB "
        f"(first process settled {fmt(r.get('settled_rss_mib'), 1)} MiB), "
        f"status patches {rl['status_patches']}, event writes {rl['event_writes']}, "
        f"calls/object {fmt(rl['sandbox_calls_per_object'])}"
    )


def peer_line(r, p):
    if "seconds" not in p:
        return f": {p}"
    return (
        f": script {p['n']} keys in {fmt(p['seconds'], 2)} s = "
        f"{fmt(p['per_key_seconds'], 3)} s/key, {fmt(p['sandbox_calls_per_key'], 1)} calls/key, "
        f"failures {p['failure_count']}; operator "
        f"{fmt((r.get('all_ready_s') or 0) / r['n'], 4)} s/object ({r['n']} objects)"
    )


def restart_line(r, rs):
    line = (
        f": API server down {fmt(rs['down_s'], 1)} s (etcd kept) right after all {r['n']} objects were poked; "
        f"after /readyz was back: a new object Ready in {fmt(rs['new_object_ready_after_back_s'])} s, "
        f"every poked object's check written in {fmt(rs['all_rechecked_after_back_s'])} s"
    )
    cpu = rs.get("cpu_s")
    if cpu:
        used = cpu["apiserver"] + cpu["operator"] + cpu["sandbox"]
        line += (
            f"; CPU meanwhile: API server {fmt(cpu['apiserver'], 1)} s, operator {fmt(cpu['operator'], 1)} s, "
            f"sandbox {fmt(cpu['sandbox'], 1)} s = {fmt(used / cpu['wall'], 2)} cores busy over {fmt(cpu['wall'], 1)} s"
        )
    return line


def per_object_growth(results, big) -> str:
    """Settled memory per object beyond the same run at N=1,000 (what each cached object costs)."""
    small = next((r for r in results if r["id"] == big["id"].replace("n10000-", "n1000-", 1)), None)
    if not small or not small.get("settled_rss_mib"):
        return ""
    kib = (big["settled_rss_mib"] - small["settled_rss_mib"]) * 1024 / (big["n"] - small["n"])
    return f"; {fmt(kib, 1)} KiB per object beyond {small['id']}'s {fmt(small['settled_rss_mib'], 1)} MiB"


def alone_cpu(a) -> float:
    """API-server CPU s per 1000 objects of every write kind the driver made alone, together."""
    return sum(w["apiserver_cpu_s_per_1000_objects"] for w in a.values())


def alone_line(r, a):
    f = r.get("first") or {}
    parts = "; ".join(
        f"{r['n']} x {what} in {fmt(w['s'], 1)} s, API-server CPU {fmt(w['apiserver_cpu_s_per_1000_objects'], 1)} s "
        f"per 1000 ({requests_text(w['apiserver_requests_per_object'])})"
        for what, w in a.items()
    )
    return (
        f": {parts}; together {fmt(alone_cpu(a), 1)} s per 1000 (the run with the operator: "
        f"{fmt(f.get('apiserver_cpu_s_per_1000_objects'), 1)} s, its creates accepted in {fmt(r.get('apply_s'), 1)} s)"
    )


def handoff_line(_r, ho):
    return "".join(
        f"{'; ' if i else ': '}{how.upper()} to the leader: Lease taken by the standby after "
        f"{fmt(h['lease_taken_s'])} s, a new object Ready {fmt(h['new_object_ready_s'])} s after the signal"
        for i, (how, h) in enumerate(ho.items())
    )


# (heading, the run's key, its line after "- **run id**")
SECTIONS = (
    ("## Remote calls per object until Ready (operator /metrics, by service and operation)", "first", first_line),
    ("## Steady state (nothing changed)", "steady", steady_line),
    ("## Relist (operator process restarted: list + one check per object)", "relist", relist_line),
    ("## The API server alone (the writes of a run, made by the driver, no operator)", "alone", alone_line),
    ("## API server restarted under load", "restart", restart_line),
    ("## Leader handoff (two replicas, the leader stopped)", "handoff", handoff_line),
    ("## The peer: straight-line script with the official Python clients, one key at a time", "peer", peer_line),
)


def markdown(meta, results, judged, path):
    binary = meta["binary"]
    L = [
        f"# rootkey-operator benchmark ({meta['mode']})",
        "",
        f"{meta['date']} · {meta['host']} · operator concurrency {meta['concurrency']} · "
        f"operator binary {fmt(binary['mb'], 1)} MB ({binary['linkage']}; the runs use the same code's "
        "glibc-linked release build, which can resolve the sandbox's *.localhost names) · driver `bench/run.py`",
        "",
        "Time = per object from its apply (POST answered) to the first Ready=True on a watch; "
        "all = first apply to last Ready. "
        "Floor: throttled = per HSM max(creates ÷ 1/s, role assignments ÷ 5/s), slowest HSM; one object = "
        f"{CRITICAL_PATH_CALLS} sequential round trips × latency. "
        "Calls = the operator's own /metrics (tokens separate); "
        "429s = sandbox counters. Writes = MODIFIED watch events + Event writes per object.",
        "",
        table_row(COLUMNS),
        table_row(["---"] * len(COLUMNS)).replace(" ", ""),
    ]
    L += [run_row(r) for r in results]
    for title, key, line in SECTIONS:
        L += ["", title, ""]
        L += [f"- **{r['id']}**{line(r, r[key])}" for r in results if r.get(key)]
    L += ["", "## Targets", "", table_row(("target", "measured", "goal", "met")), "|---|---|---|---|"]
    for j in judged:
        met = "—" if j["met"] is None else ("yes" if j["met"] else "**no**")
        L.append(table_row((j["target"], j["measured"], j["goal"], met)))
    path.write_text("\n".join(L) + "\n")


def write_results(meta, results, out_dir, stem):
    judged = judge(results, meta["binary"])
    doc = {"meta": meta, "runs": results, "targets": judged}
    (out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=str))
    markdown(meta, results, judged, out_dir / f"{stem}.md")
    svg_chart(results, out_dir / f"{stem}.svg")


def save(results, binary, concurrency, out_dir, stem):
    """Writes every results file for `stem`, runs in table order."""
    results = sorted(results, key=lambda r: (not r["throttled"], r["latency_ms"], r["n"]))
    meta = {
        "mode": stem,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": f"{os.cpu_count()} cores",
        "concurrency": concurrency,
        "binary": binary,
        "targets": TARGETS,
    }
    write_results(meta, results, out_dir, stem)
