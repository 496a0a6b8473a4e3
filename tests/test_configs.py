"""Configs are code: every group option composes and instantiates, every experiment file runs
with debug=fast, and bad overrides fail before any work with a message naming the key."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigKeyError, ValidationError

from rapport.experiments import builders, train
from rapport.experiments.config import register_configs, to_settings

CONF = Path(__file__).resolve().parents[1] / "conf"
FAST = ["debug=fast", "tracking=none"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_cfg(overrides: list[str], config_name: str = "train", hydra_cfg: bool = False):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name, overrides=overrides, return_hydra_config=hydra_cfg)


@pytest.mark.parametrize("option", options("env"))
def test_env_options_compose_and_build(option):
    s = to_settings(compose_cfg([f"env={option}", *FAST]))
    env = builders.make_env(s.env, customers=20)
    obs, info = env.reset(seed=0)
    assert obs.shape[0] == 20 and env.horizon == s.env.horizon


@pytest.mark.parametrize("option", options("agent"))
def test_agent_options_compose_and_build(option):
    s = to_settings(compose_cfg([f"agent={option}", *FAST]))
    assert s.agent.name == option, "agent.name must match the file name (agent=<name> on the command line)"
    builders.check_agent(s.agent, s.env)  # builds the agent on a two-customer population
    if s.agent.family == "baseline":
        env = builders.make_env(s.env, customers=30)
        obs, info = env.reset(seed=1)
        policy = builders.policy_factory(s.agent, s.constraints)(env)
        actions, prop = policy.act(obs, np.random.default_rng(0), action_mask=info["action_mask"])
        env.step(actions)
        assert prop.shape == (30,)


@pytest.mark.parametrize("option", options("tracking"))
def test_tracking_options_compose_and_build(option, tmp_path, monkeypatch):
    s = to_settings(compose_cfg([f"tracking={option}", "debug=fast"]))
    if s.tracking.backend == "none" or (s.tracking.uri or "").startswith("http"):
        assert s.tracking.backend == "none" or option == "server"  # a server is tested in test_mlflow_server.py
        return
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    from rapport.experiments.tracking import start_run

    with start_run(s.tracking, run_name="compose-check") as tracker:
        tracker.log_metrics({"kpi/profit_per_customer": 1.0})
    assert tracker.run_id


@pytest.mark.parametrize("option", options("debug") + options("hydra/launcher"))
def test_debug_and_launcher_options_compose(option):
    group = "debug" if option in options("debug") else "hydra/launcher"
    cfg = compose_cfg([f"{group}={option}", "tracking=none"], hydra_cfg=True)
    if group == "hydra/launcher":
        from hydra.plugins.launcher import Launcher
        from hydra.utils import get_class

        assert issubclass(get_class(cfg.hydra.launcher._target_), Launcher)
        if option == "local_parallel":
            assert get_class(cfg.hydra.launcher._target_).__name__ == "JoblibLauncher"
            assert cfg.hydra.launcher.n_jobs == 2
    else:
        assert to_settings(_drop_hydra(cfg)).env.customers <= 1000


def _drop_hydra(cfg):
    from omegaconf import OmegaConf

    c = OmegaConf.to_container(cfg, resolve=False)
    c.pop("hydra", None)
    return OmegaConf.create(c)


def test_arms_from_config_expand_to_the_allowed_product():
    s = to_settings(compose_cfg(["agent=linucb_owned", *FAST]))
    schema = builders.schema_of(builders.make_env(s.env, customers=1))
    arms = builders.expand_arms(s.agent.params["arms"], schema)
    assert len(arms) == 1 + 3 * schema.nvec[1]  # no contact, or one of 3 channels with any offer
    assert set(arms[:, 0]) == {0, 1, 2, 3} and set(arms[:, 2]) == {0}
    assert not ((arms[:, 0] == 0) & (arms[:, 1] > 0)).any()


def test_evaluate_config_composes():
    s = to_settings(compose_cfg(["policies=[abc]", *FAST], config_name="evaluate"))
    assert s.policies == ["abc"] and s.evaluation.baseline.name == "do_nothing"


def test_hydra_settings_are_wired():
    cfg = compose_cfg(FAST, hydra_cfg=True)
    assert cfg.hydra.callbacks.mlflow_parent._target_ == "rapport.experiments.tracking.MultirunParentCallback"
    assert cfg.hydra.job.chdir is False


# ----------------------------------------------------------------------- experiment files
def _sweep_values(cfg) -> list[list[str]]:
    params = cfg.hydra.sweeper.get("params") or {}
    jobs: list[list[str]] = [[]]
    for key, values in params.items():
        jobs = [j + [f"{key}={v.strip()}"] for j in jobs for v in str(values).split(",")]
    return jobs


@pytest.mark.parametrize("name", options("experiment"))
def test_every_experiment_file_smoke_runs_with_debug_fast(name):
    base = [f"experiment={name}", *FAST]
    cfg = compose_cfg(base, hydra_cfg=True)
    if cfg.sweep.params:  # an Optuna sweep: two trials through the real sweeper
        from rapport.experiments.sweep import run_sweep

        overrides = base + ["sweep.n_trials=2", "sweep.n_jobs=1"]
        study = run_sweep(overrides, to_settings(_drop_hydra(compose_cfg(overrides, hydra_cfg=True))),
                          compose_fn=lambda ov: compose_cfg(ov))
        assert len(study.trials) == 2
        return
    jobs = _sweep_values(cfg)
    assert jobs, f"experiment {name} defines no jobs"
    for job in jobs:
        metrics = train.run(compose_cfg(base + job))
        assert "kpi/profit_per_customer" in metrics


# ------------------------------------------------------------------------- bad overrides
@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Fail loudly if a run gets past validation, and point MLflow at a store that must stay empty."""
    import rapport.experiments.training as training
    def boom(*args, **kwargs):
        raise AssertionError("work started before the bad config was rejected")

    monkeypatch.setattr(training, "train_agent", boom)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    yield tmp_path
    assert not (tmp_path / "mlflow.db").exists(), "an MLflow run was opened for a bad config"


@pytest.mark.parametrize("override, error, needle", [
    ("env.customers=-5", ValueError, "env.customers"),
    ("env.horizon=0", ValueError, "env.horizon"),
    ("env.scenario=atlantis", ValueError, "atlantis"),
    ("+env.overrides.not_a_field=1", ValueError, "not_a_field"),
    ("+agent.params.alpah=1", ValueError, "alpah"),
    ("agent.params.ridge=0", ValueError, "ridge"),
    ("+agent.params.arms={channel: [fax]}", ValueError, "fax"),
    ("evaluation.confidence=1.5", ValueError, "evaluation.confidence"),
    ("train.timesteps=0", ValueError, "train.timesteps"),
    ("agent@evaluation.baseline=linucb", ValueError, "evaluation.baseline"),
    ("evaluation.shards=0", ValueError, "evaluation.shards"),
    ("evaluation.distill_depth=-1", ValueError, "evaluation.distill_depth"),
    ("ray.num_cpus=0", ValueError, "ray.num_cpus"),
])
def test_bad_values_fail_before_any_work_naming_the_key(override, error, needle, no_work):
    cfg = compose_cfg([override, "debug=fast"])
    with pytest.raises(error, match=needle):
        train.run(cfg)


@pytest.mark.parametrize("override, error, needle", [
    ("agent=no_such_agent", MissingConfigException, "no_such_agent"),
    ("env.bogus=1", ConfigCompositionException, "bogus"),
    ("env.customers=many", ConfigCompositionException, "customers"),
    ("experiment=no_such_experiment", MissingConfigException, "no_such_experiment"),
])
def test_bad_overrides_fail_at_composition_naming_the_key(override, error, needle):
    with pytest.raises((error, ConfigKeyError, ValidationError)) as info:
        compose_cfg([override, "debug=fast"])
    text = str(info.value) + str(info.value.__cause__ or "")
    assert needle in text


def test_ray_node_and_shards_reach_the_run_settings():
    settings = to_settings(compose_cfg(["agent=mass", "debug=fast", "ray.address=auto", "evaluation.shards=4"]))
    assert settings.ray.address == "auto" and settings.evaluation.shards == 4


@pytest.mark.slow
def test_sharded_rapport_train_matches_the_single_process_run():
    import shutil
    import tempfile

    short = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # Ray's unix sockets need a short path
    try:
        common = ["agent=rfm", "debug=fast", "tracking=none", "evaluation.oracle=false"]
        single = train.run(compose_cfg(common))
        sharded = train.run(compose_cfg([*common, "evaluation.shards=2", "ray.num_cpus=2",
                                         f"ray.tmpdir={short}"]))
        assert single == sharded
    finally:
        shutil.rmtree(short, ignore_errors=True)
