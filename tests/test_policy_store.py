"""The policy folder keeps what an SB3 policy was trained behind: save, load, act the same."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import VecNormalize

from rapport.agents import baselines
from rapport.agents.rl import make_ppo
from rapport.agents.rl_policy import SB3Policy
from rapport.agents.sb3_adapter import BatchedVecEnv
from rapport.experiments.config import AgentConfig, ConstraintsConfig
from rapport.experiments.export.samples import quick_population, random_observations
from rapport.experiments.policy_store import load_policy, save_policy

torch.set_num_threads(1)
PPO_AGENT = AgentConfig(name="ppo", family="rl", target="rapport.agents.rl.make_ppo", normalize_obs=True)


@pytest.fixture(scope="module")
def trained():
    env, schema = quick_population(64, horizon=4)
    venv = VecNormalize(BatchedVecEnv(env), norm_obs=True, norm_reward=True)
    model = make_ppo(venv, rollout_size=256, seed=0)
    model.learn(512)
    return model, venv, schema


def test_saved_normalization_is_applied_after_loading(trained, tmp_path):
    model, venv, schema = trained
    folder = save_policy(tmp_path / "p", schema=schema, agent=PPO_AGENT, constraints=ConstraintsConfig(),
                         sb3_model=model, greedy=False, obs_normalization=venv)
    meta = json.loads((folder / "meta.json").read_text())
    np.testing.assert_allclose(meta["obs_normalization"]["mean"], venv.obs_rms.mean)
    np.testing.assert_allclose(meta["obs_normalization"]["var"], venv.obs_rms.var)
    loaded = load_policy(folder)
    obs = random_observations(schema, 500, np.random.default_rng(1))
    in_memory = SB3Policy(model, obs_normalization=venv)
    for a, b in zip(in_memory.action_probabilities(obs), loaded.core.action_probabilities(obs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    ref, ref_prop = in_memory.act(obs, np.random.default_rng(2))
    got, got_prop = loaded.act(obs, np.random.default_rng(2))
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(got_prop, ref_prop, rtol=1e-6)
    # Without the statistics the same weights decide differently: the test can fail.
    raw = SB3Policy(model).action_probabilities(obs)[0]
    assert not np.allclose(raw, loaded.core.action_probabilities(obs)[0])


def test_normalization_is_refused_where_it_cannot_apply(trained, tmp_path):
    model, _, schema = trained
    with pytest.raises(ValueError, match="obs_normalization applies to SB3 models"):
        save_policy(tmp_path / "a", schema=schema, agent=AgentConfig(name="mass", family="baseline",
                                                                     target="rapport.agents.baselines.MassMarketing"),
                    constraints=ConstraintsConfig(), core_policy=baselines.DoNothing(schema),
                    obs_normalization={"mean": [0.0] * schema.n_features, "var": [1.0] * schema.n_features})
    with pytest.raises(ValueError, match=rf"must be {schema.n_features} finite numbers"):
        save_policy(tmp_path / "b", schema=schema, agent=PPO_AGENT, constraints=ConstraintsConfig(),
                    sb3_model=model, obs_normalization={"mean": [0.0, 1.0], "var": [1.0, 1.0]})
    with pytest.raises(ValueError, match="agent.normalize_obs applies to family 'rl' only"):
        AgentConfig(name="mass", family="baseline", target="rapport.agents.baselines.MassMarketing", normalize_obs=True)


def test_a_logged_policy_loads_without_running_code_from_the_store(tmp_path, monkeypatch):
    import mlflow

    from rapport.experiments.policy_store import load_logged_policy, log_pyfunc_model
    from rapport.experiments.tracking_store import ensure_experiment

    env, schema = quick_population(50, horizon=4)
    policy = baselines.MassMarketing(schema, every_k_weeks=1, horizon=4)
    folder = save_policy(tmp_path / "p", schema=schema, constraints=ConstraintsConfig(), core_policy=policy,
                         agent=AgentConfig(name="mass", family="baseline", target="rapport.agents.baselines.MassMarketing"))
    monkeypatch.chdir(tmp_path)  # the store's artifacts go to ./mlruns
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=ensure_experiment(uri, "no-code")):
            model_uri = log_pyfunc_model(folder)
        marker = tmp_path / "marker"
        stored_code = list((tmp_path / "mlruns").rglob("mlflow_policy_model.py"))
        assert stored_code, "the pyfunc model keeps a copy of its code file in the store"
        for f in stored_code:  # someone with write access to the store plants code there
            f.write_text(f.read_text() + f"\nopen({str(marker)!r}, 'w').write('code ran')\n")
        loaded = load_logged_policy(model_uri)
        assert not marker.exists()
        obs = random_observations(schema, 200, np.random.default_rng(0))
        np.testing.assert_array_equal(loaded.act(obs, np.random.default_rng(1))[0],
                                      policy.act(obs, np.random.default_rng(1))[0])
        # the threat is real: MLflow's own pyfunc loader imports the stored code file
        mlflow.pyfunc.load_model(model_uri)
        assert marker.exists()
    finally:
        mlflow.set_tracking_uri(previous)
