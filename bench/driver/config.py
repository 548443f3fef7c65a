"""What a benchmark invocation runs, built once from the command line and passed to every part."""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORLD = ROOT / "deploy" / "sandbox" / "bench-world.yaml"
CRD = ROOT / "crds" / "antimatter.io_azurerootkeys.yaml"
PEER_SCRIPT = ROOT / "bench" / "peer.py"

# Each entry is N:latency_ms:t|u[:steady][:peerN][:extras] (steady: poke, intervals or - for none;
# extras, joined by +: restart = the API server restarted under load, handoff = leader handoff on
# SIGTERM and SIGKILL, prop20 = 20 s of RBAC propagation in the sandbox, alone = the run's API
# writes made again by the driver with no operator running, for what they cost the API server).
PROPAGATION_S = 20  # the prop20 extra: the sandbox's RBAC propagation delay
QUICK_MATRIX = "1:20:t:poke,100:20:t:poke:10"
# Throttled (sandbox limits on, operator pacing on): 1, 100, 1,000 at 0 and 20 ms.
# Unthrottled (limits and pacing off): 100 (peer), 1,000 and 10,000 at 20 ms, 10,000 at 0 ms.
# 10,000 is not run throttled: its floor alone is 1,000 s (5,000 creates over 5 HSMs at 1/s).
FULL_MATRIX = (
    "1:0:t:poke,1:20:t:poke,1:20:t:-:0:prop20,100:0:t:intervals:100,100:20:t:poke:100,1000:0:t:poke,"
    "1000:20:t:poke,100:20:u:poke:100,1000:20:u:poke:0:alone+restart+handoff,10000:20:u:poke,10000:0:u:-"
)


@dataclass(frozen=True)
class RunSpec:
    """One run of the matrix: N objects at one injected latency, with or without Azure's limits."""

    n: int
    latency_ms: int
    throttled: bool
    steady: str | None  # "poke", "intervals" or None
    peer_n: int  # keys for the one-at-a-time script; 0: no script
    extras: frozenset[str] = frozenset()

    @property
    def id(self) -> str:
        prop = "-prop20" if "prop20" in self.extras else ""
        return f"n{self.n}-lat{self.latency_ms}-{'throttled' if self.throttled else 'unthrottled'}{prop}"

    @classmethod
    def parse(cls, text: str) -> RunSpec:
        parts = text.split(":")
        return cls(
            n=int(parts[0]),
            latency_ms=int(parts[1]),
            throttled=parts[2] == "t",
            steady=parts[3] if len(parts) > 3 and parts[3] != "-" else None,
            peer_n=int(parts[4]) if len(parts) > 4 and parts[4] else 0,
            extras=frozenset(x for x in (parts[5] if len(parts) > 5 else "").split("+") if x),
        )


@dataclass(frozen=True)
class Config:
    runs: tuple[RunSpec, ...]
    max_minutes: float  # no new run starts after this
    build: bool
    bin_dir: pathlib.Path  # the release binaries the runs use
    static_bin: pathlib.Path | None  # the static operator whose size is reported
    tools_dir: pathlib.Path  # kube-apiserver, etcd, kubectl (make tools)
    concurrency: int
    apply_threads: int
    relist: bool
    peer_python: str | None
    peer_timeout_s: int
    out_dir: pathlib.Path
    stem: str
    merge: bool
    work_dir: pathlib.Path | None

    @property
    def reported_binary(self) -> pathlib.Path:
        return self.static_bin or self.bin_dir / "rootkey-operator"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Config:
        target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
        default_minutes = 5 if args.quick else 75
        matrix = args.runs or (QUICK_MATRIX if args.quick else FULL_MATRIX)
        return cls(
            runs=tuple(RunSpec.parse(s) for s in matrix.split(",")),
            max_minutes=args.max_minutes or default_minutes,
            build=not args.no_build,
            bin_dir=pathlib.Path(args.bin_dir) if args.bin_dir else target / "release",
            static_bin=pathlib.Path(args.static_bin) if args.static_bin else None,
            tools_dir=ROOT / "bin",
            concurrency=args.concurrency,
            apply_threads=args.apply_threads,
            relist=args.relist,
            peer_python=args.peer_python or find_peer_python(),
            peer_timeout_s=args.peer_timeout,
            out_dir=pathlib.Path(args.out),
            stem=args.name or ("quick" if args.quick else "full"),
            merge=args.merge,
            work_dir=pathlib.Path(args.work_dir) if args.work_dir else None,
        )


def find_peer_python() -> str | None:
    """A Python with the Azure SDK and the Antimatter client: $BENCH_PEER_PYTHON or a cached test venv."""
    env = os.environ.get("BENCH_PEER_PYTHON")
    if env:
        return env
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "rootkey-operator"
    for py in sorted(cache.glob("venv-*/bin/python")):
        probe = [str(py), "-c", "import azure.keyvault.administration, antimatter_api"]
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return str(py)
    return None
