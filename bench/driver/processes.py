"""The control plane, the sandbox and the operator as child processes of the driver.

Everything is bounded by hard timeouts; every child process is stopped on exit, error or Ctrl-C
(and dies with the driver even if the driver is SIGKILLed).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pathlib
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass

from .config import WORLD, Config
from .world import OPERATOR_APP, OPERATOR_SECRET


class Timeout(Exception):
    pass


def die_with_parent():
    """preexec_fn: the child gets SIGTERM when the driver dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError):  # not glibc: the child outlives a killed driver
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class Processes:
    """The driver's running children, stopped newest first."""

    def __init__(self):
        self.running: list[subprocess.Popen] = []

    def start(self, argv, log_path: pathlib.Path, env=None) -> subprocess.Popen:
        with open(log_path, "wb") as log:
            p = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                preexec_fn=die_with_parent,
            )
        self.running.append(p)
        return p

    def stop(self, p: subprocess.Popen, timeout_s=10):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.running = [q for q in self.running if q is not p]

    def stop_all(self):
        for p in reversed(self.running):
            self.stop(p)


def wait_until(check, timeout_s, what, interval_s=0.05):
    """check()'s first truthy value, polled every interval_s; Timeout after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = check()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Timeout(f"{what}: not within {timeout_s:.0f}s")
        time.sleep(interval_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout_s=5) -> tuple[int, bytes]:
    """(status, body), or (0, b"") when nothing answered: callers poll until a server is up."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status, r.read()
    except Exception:
        return 0, b""


def http_send(method, url, body: dict, timeout_s=5) -> dict:
    """A JSON request to the sandbox's admin API; its JSON answer (errors raise)."""
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as r:
        return json.loads(r.read() or b"null")


def _check_running(p: subprocess.Popen, name, log_path: pathlib.Path):
    if p.poll() is not None:
        raise RuntimeError(f"{name} exited: " + log_path.read_text()[-2000:])


def start_control_plane(procs: Processes, cfg: Config, work: pathlib.Path) -> tuple[pathlib.Path, subprocess.Popen]:
    """A fresh kube-apiserver and etcd: (the kubeconfig once it is written, the process, which restarts
    the API server on SIGHUP)."""
    kubeconfig, log = work / "kubeconfig", work / "controlplane.log"
    argv = [
        str(cfg.bin_dir / "controlplane"),
        "--bin-dir",
        str(cfg.tools_dir),
        "up",
        "--kubeconfig-out",
        str(kubeconfig),
    ]
    p = procs.start(argv, log)
    wait_until(
        lambda: (kubeconfig.exists() and kubeconfig.stat().st_size > 0) or p.poll() is not None,
        120,
        "control plane",
        interval_s=0.2,
    )
    _check_running(p, "control plane", log)
    return kubeconfig, p


def start_sandbox(procs: Processes, cfg: Config, work: pathlib.Path, latency_ms, throttled) -> dict:
    """A fresh sandbox with the bench world; returns its endpoints.json."""
    state, log = work / "sandbox", work / "sandbox.log"
    argv = [str(cfg.bin_dir / "rootkey-sandbox"), "--world", str(WORLD), "--port", "0", "--admin-port", "0"]
    argv += ["--state-dir", str(state), "--latency-ms", str(latency_ms), "--rate-limits", "on" if throttled else "off"]
    p = procs.start(argv, log)
    wait_until(lambda: (state / "endpoints.json").exists() or p.poll() is not None, 30, "sandbox endpoints")
    _check_running(p, "sandbox", log)
    time.sleep(0.1)  # endpoints.json appears before it is completely written
    endpoints = json.loads((state / "endpoints.json").read_text())
    endpoints["pid"] = p.pid  # its CPU is reported beside the operator's and the API server's
    wait_until(lambda: http_get(endpoints["admin_url"] + "/healthz")[0] == 200, 10, "sandbox healthz")
    return endpoints


@dataclass
class Operator:
    process: subprocess.Popen
    metrics_port: int
    startup_ms: float  # process start to /readyz answering 200


def start_operator(
    procs: Processes, cfg: Config, work, endpoints, kubeconfig, throttled, tag, leader_elect=False
) -> Operator:
    """One operator process, once its /readyz answers; with leader_elect, replica `tag` of several
    (it is ready before it leads)."""
    metrics_port, probe_port = free_port(), free_port()
    argv = [str(cfg.bin_dir / "rootkey-operator"), "run", "--log-format", "json", "--cloud", "Custom"]
    argv += ["--authority-host", endpoints["authority_url"], "--graph-url", endpoints["graph_url"]]
    argv += ["--hsm-dns-suffixes", endpoints["hsm_dns_suffix"], "--ca-bundle", endpoints["ca_pem_path"]]
    argv += ["--azure-identity", "secret", "--cluster-id", "bench-cluster", "--concurrency", str(cfg.concurrency)]
    argv += ["--antimatter-api-urls", endpoints["antimatter_url"]]
    argv += ["--metrics-addr", f"127.0.0.1:{metrics_port}", "--probe-addr", f"127.0.0.1:{probe_port}"]
    if not throttled:
        argv += ["--hsm-key-creates-per-second", "0", "--hsm-rbac-per-second", "0"]
    if leader_elect:
        argv += ["--leader-elect", "--lease-namespace", "default", "--pod-name", f"operator-{tag}"]
    env = {
        "AZURE_CLIENT_ID": OPERATOR_APP,
        "AZURE_CLIENT_SECRET": OPERATOR_SECRET,
        "KUBECONFIG": str(kubeconfig),
        "RUST_LOG": os.environ.get("BENCH_RUST_LOG", "info"),
    }
    log = work / f"operator-{tag}.log"
    t0 = time.monotonic()
    p = procs.start(argv, log, env=env)
    wait_until(
        lambda: http_get(f"http://127.0.0.1:{probe_port}/readyz", 1)[0] == 200 or p.poll() is not None,
        30,
        "operator /readyz",
        interval_s=0.002,  # start-up is itself measured
    )
    _check_running(p, "operator", log)
    return Operator(p, metrics_port, (time.monotonic() - t0) * 1000.0)
