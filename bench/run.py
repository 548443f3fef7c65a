#!/usr/bin/env python3
"""`make bench` / `make bench-quick`: the operator against a real kube-apiserver and the sandbox,
measured side by side with a straight-line script using the official Python clients.

What is measured and how: driver/measure.py. The runs need the test venv (the Kubernetes client;
the peer script also needs the Azure SDK and antimatter-api); --judge-only needs only Python.
"""

import argparse
import json
import pathlib
import signal
import subprocess
import sys
import time

from driver import report
from driver.config import ROOT, WORLD, Config


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N in {1, 100}, 20 ms, throttled; peer N=10; < ~5 min")
    ap.add_argument("--runs", help="comma-separated N:latency:t|u[:steady][:peerN] (overrides the matrix)")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin-dir", default=None, help="where the built binaries are (default: $CARGO_TARGET_DIR/release)")
    ap.add_argument(
        "--static-bin",
        default=None,
        help="the static operator build whose size is reported (make bench passes it); the runs use the "
        "release build in --bin-dir, as a static glibc build cannot resolve the sandbox's *.localhost "
        "names through nss-myhostname",
    )
    ap.add_argument("--concurrency", type=int, default=64, help="operator --concurrency")
    ap.add_argument("--apply-threads", type=int, default=16)
    ap.add_argument("--no-relist", dest="relist", action="store_false")
    ap.add_argument("--peer-python", default=None)
    ap.add_argument("--peer-timeout", type=int, default=600)
    ap.add_argument("--max-minutes", type=float, default=None, help="stop starting new runs after this")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--name", default=None, help="results file stem (default: quick or full)")
    ap.add_argument("--merge", action="store_true", help="merge into an existing results file (replace runs by id)")
    ap.add_argument("--work-dir", default=None)
    ap.add_argument(
        "--judge-only",
        action="store_true",
        help="re-judge an existing results file (--name) against the current targets; runs nothing",
    )
    return ap.parse_args()


def judge_only(out, name):
    path = pathlib.Path(out) / f"{name or 'full'}.json"
    data = json.loads(path.read_text())
    report.write_results(data["meta"], data["runs"], path.parent, path.stem)
    print(path.with_suffix(".md").read_text())
    return 0


def _on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run_matrix(cfg: Config):
    # Imported here: --judge-only runs with any Python, the runs with the venv's Kubernetes client.
    from driver.measure import binary_info
    from driver.processes import Processes
    from driver.scenario import Run, log

    if not WORLD.exists():
        raise SystemExit(f"{WORLD} missing: python3 bench/gen_world.py")
    if not (cfg.tools_dir / "kube-apiserver").exists():
        raise SystemExit("bin/kube-apiserver missing: make tools")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.work_dir:
        cfg.work_dir.mkdir(parents=True, exist_ok=True)
    results_json = cfg.out_dir / f"{cfg.stem}.json"
    results = json.loads(results_json.read_text())["runs"] if cfg.merge and results_json.exists() else []
    procs = Processes()

    def save(binary):
        report.save(results, binary, cfg.concurrency, cfg.out_dir, cfg.stem)

    try:
        if cfg.build:
            log("building release binaries (cargo build --release --workspace --bins)")
            subprocess.run(["cargo", "build", "--release", "--workspace", "--bins"], cwd=ROOT, check=True, timeout=3600)
        binary = binary_info(cfg.reported_binary)
        started = time.monotonic()  # the time cap counts runs, not the build
        for spec in cfg.runs:
            if (time.monotonic() - started) / 60 > cfg.max_minutes:
                log(f"time cap {cfg.max_minutes} min reached: skipping N={spec.n} @{spec.latency_ms}ms")
                skipped = {"id": spec.id, "n": spec.n, "latency_ms": spec.latency_ms, "throttled": spec.throttled}
                results.append({**skipped, "complete": False, "error": "skipped: time cap"})
                continue
            r = Run(cfg, spec, procs).execute()
            results = [x for x in results if x["id"] != r["id"]] + [r]
            save(binary)
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        procs.stop_all()
        try:
            save(binary_info(cfg.reported_binary))
        except Exception as e:
            log(f"could not save results: {e}")
        return 130
    finally:
        procs.stop_all()
    save(binary)
    md = cfg.out_dir / f"{cfg.stem}.md"
    log(f"results: {md}")
    print(md.read_text())
    # Numbers are never judged in the exit code; only a run that broke (not a slow one) fails.
    broken = [
        r["id"]
        for r in results
        if r.get("error") and "budget" not in str(r["error"]) and not str(r["error"]).startswith("skipped")
    ]
    return 1 if broken else 0


def main():
    args = parse_args()
    if args.judge_only:
        return judge_only(args.out, args.name)
    signal.signal(signal.SIGTERM, _on_signal)
    return run_matrix(Config.from_args(args))


if __name__ == "__main__":
    sys.exit(main())
