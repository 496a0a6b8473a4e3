"""Rapport on a real local Ray cluster: sharded evaluation and Hydra multiruns through Ray.

The default tier runs the sharded evaluation and the launcher on a tiny Hydra app (jobs that
succeed, raise, kill their worker); ``-m slow`` adds a ``rapport-train`` multirun with MLflow.
The module starts one cluster with ``ray start --head`` on 127.0.0.1 (2 CPUs, no dashboard, its
own RAY_TMPDIR; ``rapport.experiments.launchers.ray_cluster.LocalCluster``) and stops it at the end, also
when a test fails, by ending the process group that ``ray start`` created (``ray stop`` would end
every Ray process on the machine).

Loopback: on Linux Ray rewrites 127.0.0.1 to the machine's interface address unless
``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set for ``ray start`` and for every driver (see
``experiments/launchers/ray_cluster.py``); the fixture checks that the cluster registered and
recorded 127.0.0.1 only, and every address passed below is 127.0.0.1.
"""

import ipaddress
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

VENV_BIN = Path(sys.executable).parent


def _listening_hosts(pids: list[int]) -> set[str]:
    """Hosts of the TCP sockets these processes listen on (from /proc/net/tcp and tcp6)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").glob("*"):
            try:
                target = fd.readlink().name
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(cols[1].split(":")[0])
                if len(raw) == 4:
                    hosts.add(".".join(str(b) for b in raw[::-1]))
                else:  # IPv6 words are little-endian per 32-bit group
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    hosts.add(str(ipaddress.IPv6Address(words).ipv4_mapped or ipaddress.IPv6Address(words)))
    return hosts


@pytest.fixture(scope="module")
def ray_cluster():
    """``{"address", "env", "tmpdir"}`` of a running single-node cluster on 127.0.0.1."""
    from rapport.experiments.launchers.ray_cluster import LocalCluster

    cluster = LocalCluster(num_cpus=2)
    try:
        cluster.start()
        assert "Local node IP: 127.0.0.1" in cluster.start_log, cluster.start_log
        assert cluster.recorded_address() == cluster.address  # 127.0.0.1:<port>, not the interface
        assert _listening_hosts(cluster.live_processes()) == {"127.0.0.1"}  # GCS, raylet, agents
        yield {"address": cluster.address, "env": cluster.env, "tmpdir": cluster.tmpdir}
    finally:
        cluster.stop()
        assert not cluster.live_processes()


class OrdersReducer:
    """A population-level value reduced every week: total orders, plus the value each shard was
    handed the week before (to prove the broadcast reached every row of every shard)."""

    name = "orders"

    def partial(self, env, info, active):
        seen = getattr(env, "_last_population_orders", 0.0)
        return np.stack([np.where(active, info["orders"], 0).astype(np.float64),
                         np.full(len(active), seen)], axis=1)

    def combine(self, week, block_sums):
        return float(block_sums[:, 0].sum()), float(block_sums[:, 1].sum())

    def apply(self, env, value):
        env._last_population_orders = value[0]


def test_sharded_evaluation_of_1e5_customers_in_4_ray_shards_is_bit_identical(ray_cluster, monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before `import ray`: keep 127.0.0.1
    monkeypatch.setenv("RAY_TMPDIR", ray_cluster["tmpdir"])
    import ray.cloudpickle

    import rapport.envs as envs
    from rapport.agents.baselines import MassMarketing, RFMSegmentRules
    from rapport.agents.constraints import BudgetConstraint
    from rapport.experiments.builders import schema_of
    from rapport.experiments.evaluation import EvalSettings, block_sums, rollout
    from rapport.experiments.launchers.ray_cluster import RayConfig, node_addresses
    from rapport.experiments.sharding import COL, ShardPool

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    sigterm_before = signal.getsignal(signal.SIGTERM)
    n, horizon, seed = 100_000, 6, 11
    s = EvalSettings(envs.get_scenario("retail"), customers=n, horizon=horizon, seeds=(seed,), blocks=200)
    schema = schema_of(envs.PopulationEnv(num_envs=2))
    budgeted = BudgetConstraint(MassMarketing(schema, channel="email", spend_level=1, every_k_weeks=1,
                                              horizon=horizon), schema, weekly_budget=0.05 * n)
    rfm = RFMSegmentRules(schema, horizon=horizon)
    with ShardPool(s, 1, executor="local") as pool:
        one = pool.rollout(budgeted, seed, reducers=[OrdersReducer()])
    with ShardPool(s, 4, executor="ray", ray=RayConfig(address=ray_cluster["address"])) as pool:
        assert node_addresses() == ["127.0.0.1"]
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        assert [hi - lo for _, _, lo, hi in pool.bounds] == [25_000] * 4
        sharded = pool.rollout(budgeted, seed, reducers=[OrdersReducer()], return_values=True)
        sharded_rfm = pool.rollout(rfm, seed, return_values=True)
    assert not ray.is_initialized()  # the pool's own connection is closed ...
    assert signal.getsignal(signal.SIGTERM) is sigterm_before  # ... and ray.init's SIGTERM exit undone

    for policy, r in ((budgeted, sharded), (rfm, sharded_rfm)):
        ref = rollout(policy, s, seed)  # the single-process evaluator, whole population in one env
        assert np.array_equal(r.values, ref.values)
        assert np.array_equal(r.block_sums, block_sums(ref.values, s.n_blocks)[0])
        assert np.array_equal(r.segments, ref.segments)  # value deciles cut over all shards
        np.testing.assert_allclose(r.weekly_profit, ref.weekly_profit, rtol=1e-12)
    # layout-invariant to the bit: weekly per-block trajectories and the weekly population reduce
    assert np.array_equal(sharded.weekly_block_profit, one.weekly_block_profit)
    assert sharded.population_values == one.population_values
    assert np.array_equal(sharded.defunded, one.defunded) and sharded.defunded.sum() > 0
    totals = [v[0] for v in sharded.population_values["orders"]]
    assert sum(totals) == sharded.values[:, COL["orders"]].sum()
    handed = [v[1] / n for v in sharded.population_values["orders"]]
    assert handed == [0.0] + totals[:-1]  # every customer saw last week's population total


def _mlflow_runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], max_results=100)


@pytest.mark.slow  # ~20 s alone, ~45 s on a contended machine: every worker imports the whole stack
def test_rapport_train_multirun_through_the_ray_launcher(ray_cluster, tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("ray-sweep")  # the store exists before jobs run in parallel
    env = {**ray_cluster["env"], "MLFLOW_TRACKING_URI": uri, "CI": "true"}
    cmd = [str(VENV_BIN / "rapport-train"), "-m", "hydra/launcher=ray",
           f"hydra.launcher.ray.address={ray_cluster['address']}", "debug=fast", "env.customers=200",
           "env.horizon=4", "evaluation.seeds=1", "evaluation.oracle=false", "tracking.experiment=ray-sweep",
           "tracking.log_model=false", "tracking.log_plots=false", "agent=mass", "seed=0,1,-1"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log  # Hydra reports the first failed job once all jobs are done
    [summary_file] = tmp_path.glob("multirun/*/*/ray_launcher_summary.json")
    jobs = {j["overrides"][-1]: j for j in json.loads(summary_file.read_text())}
    assert sorted(jobs) == ["seed=-1", "seed=0", "seed=1"], jobs
    for good in (jobs["seed=0"], jobs["seed=1"]):
        assert good["status"] == "COMPLETED" and good["node"] == "127.0.0.1", good
        assert good["working_dir"] == str(tmp_path)
    assert jobs["seed=-1"]["status"] == "FAILED" and "seed" in jobs["seed=-1"]["error"], jobs["seed=-1"]

    runs = _mlflow_runs(uri, "ray-sweep")
    children = [r for r in runs if r.data.tags.get("rapport.role") != "parent"]
    assert sorted(r.info.run_name for r in children) == ["mass-seed0", "mass-seed1"], log
    for run in children:
        assert run.info.status == "FINISHED"
        assert np.isfinite(run.data.metrics["kpi/profit_per_customer"])
    parents = [r for r in runs if r.data.tags.get("rapport.role") == "parent"]
    assert len(parents) == 1, log
    assert parents[0].info.status == "FAILED"  # a job failed: the multirun's parent says so
    assert all(r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id for r in children)


TINY_APP = textwrap.dedent('''
    import os
    from dataclasses import dataclass, field
    from typing import Any

    import hydra
    from hydra.core.config_store import ConfigStore
    from hydra.core.hydra_config import HydraConfig

    @dataclass
    class AppConfig:
        mode: str = "ok"
        ray: Any = field(default_factory=lambda: {"address": None})  # the app's own `ray` node

    ConfigStore.instance().store(name="app", node=AppConfig)

    @hydra.main(version_base="1.3", config_path=None, config_name="app")
    def app(cfg):
        if cfg.mode == "raise":
            raise ValueError("this job fails on purpose")
        if cfg.mode == "crash":
            os._exit(3)  # the worker process dies without a word
        out = os.path.join(HydraConfig.get().runtime.output_dir, "result.txt")
        with open(out, "w") as f:
            f.write(f"{os.getpid()} {os.environ.get('RAPPORT_TEST_TOKEN')} {os.getcwd()}")
        return cfg.mode

    if __name__ == "__main__":
        app()
''')


def test_launcher_reports_each_failure_and_finishes_the_other_jobs(ray_cluster, tmp_path):
    """A tiny Hydra app whose jobs succeed, raise or kill their worker; the launcher config is
    conf/hydra/launcher/ray.yaml and the address comes from the app's top-level ``ray`` node."""
    (tmp_path / "app.py").write_text(TINY_APP)
    env = {**ray_cluster["env"], "RAPPORT_TEST_TOKEN": "forwarded"}
    conf_dir = Path(__file__).resolve().parents[1] / "conf"  # conf/hydra/launcher/ray.yaml
    cmd = [sys.executable, "app.py", "-m", f"hydra.searchpath=[file://{conf_dir}]", "hydra/launcher=ray",
           f"ray.address={ray_cluster['address']}", "mode=ok,raise,crash,ok"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log, _ = proc.communicate(timeout=180)
    assert proc.returncode != 0 and "this job fails on purpose" in log, log
    [summary_file] = tmp_path.glob("multirun/*/*/ray_launcher_summary.json")
    jobs = sorted(json.loads(summary_file.read_text()), key=lambda j: j["idx"])
    assert [j["status"] for j in jobs] == ["COMPLETED", "FAILED", "FAILED", "COMPLETED"], jobs
    assert jobs[1]["error"] == "ValueError: this job fails on purpose"
    assert "died" in jobs[2]["error"].lower() or "crash" in jobs[2]["error"].lower(), jobs[2]
    for j in (jobs[0], jobs[3]):
        pid, token, cwd = (Path(summary_file.parent) / str(j["idx"]) / "result.txt").read_text().split()
        assert int(pid) != proc.pid and token == "forwarded" and cwd == str(tmp_path)
