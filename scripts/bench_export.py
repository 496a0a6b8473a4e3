"""Benchmark exported policies: ONNX batch decisions/s and served single-customer latency.

    python scripts/bench_export.py [--customers 100000] [--repeats 7] [--requests 300]

1. Batch scoring: each policy is exported to ONNX and run with onnxruntime alone
   (``DecisionRunner``: input check, exploration noise, the graph) on ``--customers`` random
   valid customers, with 1 and 2 intra-op threads; the best and median of ``--repeats`` runs
   after a warm-up. Target: >= 1,000,000 decisions/s with 2 threads.
2. Serving: the PPO export registered in a temporary MLflow store and served with
   ``mlflow models serve -m models:/NAME@champion --env-manager local`` on 127.0.0.1; median and
   99th percentile latency of ``--requests`` single-customer POST /invocations (after 20 warm-up
   requests), measured by the client over HTTP keep-alive-free requests.

Prints a table and a final JSON line. Timings depend on the machine's load (the one this was
developed on is shared by several sessions): the JSON records the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch

from rapport.experiments.export.decision_runtime import DecisionRunner
from rapport.experiments.export.exporter import export_policy
from rapport.experiments.export.samples import quick_bandit, quick_sb3_policy, random_observations

POLICIES = (("ppo_greedy", "ppo_vecnormalize", "greedy"),
            ("ppo_explore", "ppo_vecnormalize", "explore"),
            ("linucb_greedy", "linucb", "greedy"),
            ("epsilon_explore", "epsilon", "explore"),
            ("thompson_explore", "thompson", "explore"))


def _policy(kind: str):
    if kind == "ppo_vecnormalize":
        return quick_sb3_policy(kind, steps=2048)
    bandit, schema = quick_bandit(kind)
    return bandit, schema, None


def batch_throughput(root: Path, customers: int, repeats: int) -> tuple[list[dict], Path]:
    rows, ppo_onnx = [], None
    built: dict[str, tuple] = {}
    for label, kind, mode in POLICIES:
        if kind not in built:
            built[kind] = _policy(kind)
        policy, schema, norm = built[kind]
        result = export_policy(policy, schema, root / label, formats=["onnx"], mode=mode,
                               obs_normalization=norm)
        if label == "ppo_greedy":
            ppo_onnx = result
        obs = random_observations(schema, customers, np.random.default_rng(0))
        n = customers if kind != "thompson" else customers // 10  # (n, M, K) draws: 1e4 rows
        for threads in (1, 2):
            runner = DecisionRunner(result.files["onnx"], threads=threads)
            rng = np.random.default_rng(1)
            runner.decide(obs[:n], rng)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                runner.decide(obs[:n], rng)
                times.append(time.perf_counter() - t0)
            rows.append({"policy": label, "mode": mode, "threads": threads, "customers": n,
                         "best_s": min(times), "median_s": float(np.median(times)),
                         "decisions_per_s": n / float(np.median(times)),
                         "best_decisions_per_s": n / min(times)})
    return rows, ppo_onnx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def served_latency(root: Path, export, requests: int) -> dict:
    import mlflow

    from rapport.experiments.export.pyfunc import log_policy_model, register_policy_model

    uri = f"sqlite:///{root}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench-export")
    with mlflow.start_run():
        obs = np.zeros((2, len(export.spec.feature_names)), np.float32)
        info = log_policy_model(export.files["onnx"], export.spec, example_features=obs)
    register_policy_model(info.model_uri, "bench-policy", "champion")
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "RAPPORT_ORT_THREADS": "1",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    server = subprocess.Popen([str(bin_dir / "mlflow"), "models", "serve", "-m",
                               "models:/bench-policy@champion", "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port), "--workers", "1"],
                              env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        t_start = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() - t_start > 180:
                    raise RuntimeError((root / "server.log").read_text()[-2000:]) from None
                time.sleep(0.2)
        startup = time.monotonic() - t_start
        customer = random_customer(export.spec)
        payload = json.dumps({"inputs": [customer]}).encode()
        latencies = []
        for i in range(requests + 20):
            req = urllib.request.Request(f"{base}/invocations", data=payload, method="POST",
                                         headers={"Content-Type": "application/json"})
            t0 = time.perf_counter()
            with urllib.request.urlopen(req, timeout=30) as resp:
                resp.read()
            if i >= 20:
                latencies.append(time.perf_counter() - t0)
        ms = np.array(latencies) * 1e3
        return {"requests": requests, "startup_s": startup, "median_ms": float(np.median(ms)),
                "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean())}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


def random_customer(spec) -> dict:
    """One random valid customer as a request record."""
    from rapport.agents.protocol import DecisionSchema

    schema = DecisionSchema(spec.feature_names, spec.nvec, spec.channel_names, spec.offer_names,
                            spec.spend_levels)
    row = random_observations(schema, 1, np.random.default_rng(3))[0]
    return {"customer_id": 1,
            **{f: float(v) for f, v in zip(spec.feature_names, row, strict=True)}}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--requests", type=int, default=300)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        root = Path(tmp)
        rows, ppo = batch_throughput(root, args.customers, args.repeats)
        serving = served_latency(root, ppo, args.requests) if args.requests > 0 else {}
    print(f"ONNX batch scoring (onnxruntime only; 1-min load average {load:.1f} on "
          f"{os.cpu_count()} cores, shared machine)")
    print(f"{'policy':<18}{'mode':<9}{'threads':>8}{'customers':>11}{'median s':>10}"
          f"{'decisions/s':>14}{'best/s':>14}")
    for r in rows:
        print(f"{r['policy']:<18}{r['mode']:<9}{r['threads']:>8}{r['customers']:>11,}"
              f"{r['median_s']:>10.4f}{r['decisions_per_s']:>14,.0f}"
              f"{r['best_decisions_per_s']:>14,.0f}")
    if serving:
        print(f"served PPO (mlflow models serve, 1 worker): single-customer latency median "
              f"{serving['median_ms']:.2f} ms, p99 {serving['p99_ms']:.2f} ms over "
              f"{serving['requests']} requests (startup {serving['startup_s']:.1f} s)")
    two = [r for r in rows if r["threads"] == 2 and r["customers"] == args.customers]
    summary = {"bench": "export", "load_avg_1m": load, "customers": args.customers,
               "batch": {f"{r['policy']}_t{r['threads']}": round(r["decisions_per_s"])
                         for r in rows},
               "min_decisions_per_s_2_threads": round(min(r["decisions_per_s"] for r in two)),
               "target_decisions_per_s": 1_000_000, "serving": serving}
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
