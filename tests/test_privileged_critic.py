"""Asymmetric actor-critic (``agent.privileged_critic``): the critic sees latent truth while
training, the actor -- and so every served, stored or exported policy -- sees observables only.

Each check is built so that it can fail: a plain policy on the same widened observation changes
its action probabilities when latent columns move; a naive reading of ``info["latent"]`` gets the
reset rows wrong; a plain model trained on the widened observation, a schema naming latent
columns and an asymmetric model whose actor was given the whole observation are all refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.vec_env import VecNormalize

import rapport.envs as envs
from rapport.agents.privileged import PrivilegedObservation, privileged_feature_names
from rapport.agents.rl import make_ppo
from rapport.agents.rl_policy import SB3Policy
from rapport.agents.sb3_adapter import BatchedVecEnv
from rapport.experiments import builders
from rapport.experiments.config import (
    AgentConfig,
    ConstraintsConfig,
    EnvConfig,
    RunConfig,
    TrackingConfig,
    TrainConfig,
)
from rapport.experiments.export.build import build_decision_module
from rapport.experiments.export.decision_runtime import DecisionRunner
from rapport.experiments.export.exporter import export_policy
from rapport.experiments.export.modules import EligibilityRule
from rapport.experiments.export.torch_export import load_pt2
from rapport.experiments.policy_store import load_policy, load_sb3_checkpoint, save_policy
from rapport.experiments.tracking import NullTracker
from rapport.experiments.training import train_agent

torch.set_num_threads(1)
DISCOUNT = 0.998
TARGETS = {"ppo": "rapport.agents.rl.make_ppo", "maskable_ppo": "rapport.agents.rl.make_maskable_ppo"}


def _agent(algo: str, **kw) -> AgentConfig:
    return AgentConfig(name=algo, family="rl", target=TARGETS[algo], objective="lifetime_value_shaped",
                       normalize_obs=True, normalize_reward=True, privileged_critic=True,
                       params={"rollout_size": 512, "n_minibatches": 2}, **kw)


@pytest.fixture(scope="module", params=["ppo", "maskable_ppo"])
def trained(request):
    """A few thousand customer-weeks through rapport-train's own code path (``train_agent``)."""
    settings = RunConfig(env=EnvConfig(customers=64, horizon=6), agent=_agent(request.param),
                         train=TrainConfig(customers=64, timesteps=2048, rollout_size=512),
                         tracking=TrackingConfig(backend="none"), progress=False)
    scenario = builders.resolve_scenario(settings.env)
    result = train_agent(settings, builders.derive_seeds(0, 1), scenario, NullTracker(), progress=False)
    env = builders.make_env(settings.env, customers=300, scenario=scenario)
    return settings, result, env, builders.schema_of(env)


def _served(result) -> SB3Policy:
    return SB3Policy(result.sb3_model, greedy=True, obs_normalization=result.obs_normalization)


def _widened_env(n: int = 64, horizon: int = 6, mode: str = "same_step") -> PrivilegedObservation:
    env = envs.PopulationEnv(num_envs=n, horizon=horizon, autoreset_mode=mode, include_latent=True,
                             treatment_effect=False, value_discount=DISCOUNT)
    return PrivilegedObservation(env, env.channel_names)


def _contact_heavy(env, rng) -> np.ndarray:
    """Mostly e-mail and SMS with offers: fatigue builds, some customers opt out or die."""
    n = env.num_envs
    return np.stack([rng.integers(1, 3, n), rng.integers(0, 4, n), rng.integers(0, 2, n)], axis=1)


# ---- (a) the actor never reads a privileged column; the critic does ---------------------------
def _logits(policy, obs: torch.Tensor) -> list[torch.Tensor]:
    dist = policy.get_distribution(obs)
    parts = getattr(dist, "distributions", None) or dist.distribution
    return [p.logits for p in (parts if isinstance(parts, list | tuple) else [parts])]


def test_actor_is_blind_to_privileged_columns_and_the_critic_is_not(trained):
    _, result, _, schema = trained
    policy = result.sb3_model.policy
    d = schema.n_features
    wide = _widened_env(200)
    obs, _ = wide.reset(seed=3)
    assert obs.shape == (200, d + wide.n_privileged) and policy.n_observable == d
    assert policy.mlp_extractor.policy_net[0].in_features == d
    assert policy.mlp_extractor.value_net[0].in_features == d + wide.n_privileged
    perturbed = obs.copy()
    perturbed[:, d:] = np.random.default_rng(0).normal(0, 5, perturbed[:, d:].shape)
    with torch.no_grad():
        x, y = torch.as_tensor(obs), torch.as_tensor(perturbed)
        for a, b in zip(_logits(policy, x), _logits(policy, y), strict=True):
            assert torch.equal(a, b)  # bit for bit
        assert torch.equal(_logits(policy, x[:, :d])[0], _logits(policy, x)[0])  # d columns suffice
        values, moved = policy.predict_values(x), policy.predict_values(y)
    assert (values - moved).abs().min() > 0  # every row's value moved with its latent columns


def test_the_blindness_check_can_fail_on_a_plain_policy():
    """The same check on an ordinary actor-critic over the widened observation does fail."""
    wide = _widened_env(50)
    obs, _ = wide.reset(seed=3)
    plain = ActorCriticPolicy(wide.single_observation_space, wide.single_action_space, lambda _: 3e-4)
    perturbed = obs.copy()
    perturbed[:, wide.n_observable:] += 3.0
    with torch.no_grad():
        a, b = _logits(plain, torch.as_tensor(obs))[0], _logits(plain, torch.as_tensor(perturbed))[0]
    assert not torch.equal(a, b)


# ---- (b) training works and the policy serves on observables ----------------------------------
def test_short_training_serves_through_sb3policy_on_observables_only(trained):
    settings, result, env, schema = trained
    assert settings.agent.privileged_critic and "observable_features" not in settings.agent.params
    served = _served(result)
    assert served.asymmetric and served.n_features == schema.n_features == 32
    assert result.obs_normalization["mean"].shape == (32,)  # the latent columns' statistics dropped
    obs, info = env.reset(seed=11)
    actions, propensities = served.act(obs, np.random.default_rng(0), action_mask=info["action_mask"])
    assert actions.shape == (300, 3) and np.all(propensities == 1.0)
    assert info["action_mask"][np.arange(300), actions[:, 0]].all()
    evaluation_policy = result.policy_factory(env)  # what evaluation acts with
    np.testing.assert_array_equal(evaluation_policy.act(obs, np.random.default_rng(0),
                                                        action_mask=info["action_mask"])[0], actions)
    with pytest.raises(ValueError, match=r"\(n_customers, 32\).*observable features only"):
        served.act(np.zeros((4, 32 + len(privileged_feature_names(schema.channel_names))), np.float32),
                   np.random.default_rng(0))


def test_serving_applies_the_observable_part_of_the_training_normalisation():
    """SB3Policy on d raw columns decides as the model does on the normalised widened
    observation it was trained on: the first d VecNormalize statistics are the actor's."""
    wide = _widened_env(64)
    venv = VecNormalize(BatchedVecEnv(wide), gamma=DISCOUNT)
    model = make_ppo(venv, rollout_size=512, n_minibatches=2, seed=1, gamma=DISCOUNT,
                     observable_features=wide.n_observable)
    model.learn(1024)
    served = SB3Policy(model, obs_normalization=venv)  # the whole d + k statistics, cut inside
    assert served.obs_normalization["mean"].shape == (wide.n_observable,)
    obs, _ = wide.reset(seed=5)
    with torch.no_grad():
        reference = [p.probs.numpy() for p in model.policy.get_distribution(
            torch.as_tensor(venv.normalize_obs(obs), dtype=torch.float32)).distribution]
    for mine, ref in zip(served.action_probabilities(obs[:, :wide.n_observable]), reference, strict=True):
        np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-9)


def test_training_env_keeps_the_observables_and_appends_the_documented_columns():
    cfg = EnvConfig(customers=40, horizon=5)
    plain = builders.make_training_env(cfg, dataclasses.replace(_agent("ppo"), privileged_critic=False), DISCOUNT)
    wide = builders.make_training_env(cfg, _agent("ppo"), DISCOUNT)
    assert isinstance(wide, PrivilegedObservation) and not isinstance(plain, PrivilegedObservation)
    names = privileged_feature_names(wide.channel_names)
    assert wide.privileged_names == names and len(names) == 6 + 5
    assert all(n.startswith("latent_") for n in names)
    (o1, _), (o2, _) = plain.reset(seed=2), wide.reset(seed=2)
    np.testing.assert_array_equal(o2[:, :32], o1)
    inner = wide.env.unwrapped
    col = {n: 32 + j for j, n in enumerate(names)}
    np.testing.assert_array_equal(o2[:, col["latent_alive"]], inner.sim.state.alive)
    np.testing.assert_allclose(o2[:, col["latent_log_rate"]], np.log(np.maximum(inner.sim.state.rate, 1e-8)),
                               rtol=1e-6)


# ---- (c) exports: d inputs, decisions equal SB3Policy's -----------------------------------------
def test_export_has_observable_inputs_only_and_decides_as_sb3policy(trained, tmp_path):
    settings, result, env, schema = trained
    served = _served(result)
    formats = ["onnx", "torchscript"] if settings.agent.name == "ppo" else ["onnx"]
    out = export_policy(served, schema, tmp_path, formats=formats)
    graph = onnx.load(str(out.files["onnx"])).graph
    assert [i.name for i in graph.input] == ["features"]
    assert graph.input[0].type.tensor_type.shape.dim[1].dim_value == schema.n_features == 32
    assert out.spec.feature_names == schema.feature_names
    assert "asymmetric actor-critic" in out.spec.preprocessing
    obs, _ = env.reset(seed=21)
    rng = np.random.default_rng(4)
    for _ in range(3):  # later weeks: contacts, fatigue and opt-outs in the features
        obs, *_ = env.step(_contact_heavy(env, rng))
    mask = EligibilityRule.from_schema(schema.feature_names, schema.channel_names, schema.nvec).mask(obs)
    expected, _ = served.act(obs, np.random.default_rng(0), action_mask=mask)
    actions, propensity = DecisionRunner(out.files["onnx"], threads=1).decide(obs)
    np.testing.assert_array_equal(actions, expected)
    assert np.all(propensity == 1.0)
    if "torchscript" in out.files:
        module, spec = load_pt2(out.files["torchscript"])
        pt2_actions, _ = module(torch.as_tensor(obs))
        np.testing.assert_array_equal(pt2_actions.numpy(), expected)
        assert spec.feature_names == schema.feature_names
        # the MLflow pyfunc over the ONNX decision: observable columns in, a latent one refused
        import mlflow
        import pandas as pd

        from rapport.experiments.export.pyfunc import save_policy_model

        folder = save_policy_model(tmp_path / "mlflow", out.files["onnx"], out.spec, example_features=obs)
        model = mlflow.pyfunc.load_model(str(folder))
        assert model.metadata.get_input_schema().input_names() == [0]  # records of Customer
        frame = pd.DataFrame(obs[:20].astype(np.float64), columns=list(schema.feature_names))
        decided = model.predict(frame)
        np.testing.assert_array_equal([[d.channel, d.offer, d.spend_level] for d in decided], expected[:20])
        with pytest.raises(Exception, match="latent_alive"):
            model.predict(frame.assign(latent_alive=1.0))


# ---- (d) exports (and the store) refuse an actor that reads latent columns ----------------------
def test_export_refuses_a_plain_model_trained_on_the_widened_observation(tmp_path):
    wide = _widened_env(32)
    plain = make_ppo(BatchedVecEnv(wide), rollout_size=256, n_minibatches=1, seed=0)  # no observable_features
    schema = builders.schema_of(wide.env)
    served = SB3Policy(plain, greedy=True)
    assert not served.asymmetric and served.n_features == 32 + wide.n_privileged
    with pytest.raises(ValueError, match=r"actor reads 43 observation columns.*32 observable.*"
                                         r"columns 32\.\.42 are not observable"):
        build_decision_module(served, schema)
    with pytest.raises(ValueError, match=r"actor reads 43 .*columns 32\.\.42 are privileged"):
        save_policy(tmp_path / "p", schema=schema, agent=_agent("ppo"), constraints=ConstraintsConfig(),
                    sb3_model=plain)
    # widths made to agree by a schema that lists the latent columns as features: refused by name
    leaky = dataclasses.replace(schema, feature_names=schema.feature_names + wide.privileged_names)
    with pytest.raises(ValueError, match=r"latent_alive, latent_log_rate.*latent truth"):
        build_decision_module(served, leaky)
    with pytest.raises(ValueError, match="latent_alive"):
        export_policy(served, leaky, tmp_path / "x", formats=["onnx"])
    assert not (tmp_path / "x" / "policy.onnx").exists()


def test_export_refuses_an_asymmetric_model_whose_actor_was_given_the_whole_observation(trained):
    _, result, _, schema = trained
    policy = result.sb3_model.policy
    saved = policy.pi_features_extractor
    try:
        policy.pi_features_extractor = FlattenExtractor(policy.observation_space)  # tampered
        served = SB3Policy(result.sb3_model, greedy=True)
        assert served.n_features == 43
        with pytest.raises(ValueError, match=r"actor reads 43 observation columns.*not observable"):
            build_decision_module(served, schema)
    finally:
        policy.pi_features_extractor = saved
    assert SB3Policy(result.sb3_model).n_features == 32


# ---- (e) same-step autoreset: reset rows carry their new customer's latent columns -------------
def test_privileged_columns_after_same_step_autoreset_are_the_new_episodes():
    """A same-step env and a next-step twin (same seed, same actions) meet the same customers:
    at the horizon the same-step env's widened ``final_obs`` equals the twin's last observation,
    and its reset observation equals the twin's first observation of the next episode --
    privileged columns included, although the step's own ``info["latent"]["alive"]`` still
    describes the ended episode."""
    horizon, n = 4, 400
    same, twin = _widened_env(n, horizon, "same_step"), _widened_env(n, horizon, "next_step")
    o_same, _ = same.reset(seed=9)
    o_twin, _ = twin.reset(seed=9)
    np.testing.assert_array_equal(o_same, o_twin)
    rng = np.random.default_rng(1)
    for _ in range(horizon):
        actions = _contact_heavy(same, rng)
        o_same, _, _, trunc_same, info = same.step(actions)
        o_twin, _, _, trunc_twin, _ = twin.step(actions)
    assert trunc_same.all() and trunc_twin.all()
    d = same.n_observable
    np.testing.assert_array_equal(info["final_obs"], o_twin)  # the ended episode, widened
    o_next, *_ = twin.step(actions)  # the twin's reset step
    np.testing.assert_array_equal(o_same, o_next)  # the new episode's, privileged columns included
    alive, fatigue = d, d + 6
    ended_alive = info["final_obs"][:, alive]
    assert (ended_alive != o_same[:, alive]).sum() > 10  # customers did change
    assert (info["final_obs"][:, fatigue] > 0).mean() > 0.5 and (o_same[:, fatigue] == 0).all()
    # what a wrapper reading the step's own latent keys would have put there
    np.testing.assert_array_equal(info["latent"]["alive"], ended_alive.astype(bool))


def test_wrapper_needs_latent_state_and_residual_value():
    bare = envs.PopulationEnv(num_envs=4, horizon=3, autoreset_mode="same_step", include_latent=False,
                              value_discount=DISCOUNT)
    with pytest.raises(KeyError, match="include_latent=True"):
        PrivilegedObservation(bare, bare.channel_names).reset(seed=0)
    no_value = envs.PopulationEnv(num_envs=4, horizon=3, autoreset_mode="same_step")
    with pytest.raises(KeyError, match="value_discount"):
        PrivilegedObservation(no_value, no_value.channel_names).reset(seed=0)


# ---- (f) the policy store round-trips the asymmetric model --------------------------------------
def test_policy_store_round_trips_the_asymmetric_model(trained, tmp_path):
    settings, result, env, schema = trained
    save_policy(tmp_path, schema=schema, agent=settings.agent, constraints=ConstraintsConfig(),
                sb3_model=result.sb3_model, obs_normalization=result.obs_normalization)
    loaded = load_policy(tmp_path)
    expected_class = "Privileged" + ("Maskable" if settings.agent.name == "maskable_ppo" else "") \
        + "ActorCriticPolicy"
    assert loaded.meta["sb3"]["policy_class"] == expected_class
    assert loaded.meta["sb3"]["policy_kwargs"]["n_observable"] == 32
    assert loaded.core.asymmetric and loaded.core.n_features == 32
    assert loaded.meta["agent"]["privileged_critic"] is True
    obs, info = env.reset(seed=31)
    original = SB3Policy(result.sb3_model, obs_normalization=result.obs_normalization)
    for a, b in zip(original.action_probabilities(obs, info["action_mask"]),
                    loaded.core.action_probabilities(obs, info["action_mask"]), strict=True):
        np.testing.assert_array_equal(a, b)
    checkpoint = load_sb3_checkpoint(tmp_path, trust_pickle=True)
    assert type(checkpoint.policy).__name__ == expected_class


# ---- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("kw", "needles"), [
    ({"privileged_critic": "yes"}, ["agent.privileged_critic", "true or false", "'yes'"]),
    ({"target": "rapport.agents.rl.make_dqn"}, ["agent.privileged_critic", "make_ppo", "make_dqn"]),
    ({"params": {"observable_features": 3}}, ["agent.params.observable_features", "remove it"]),
    ({"params": {"policy": "MlpPolicy"}}, ["agent.params.policy", "chooses the policy class"]),
    ({"params": {"policy_kwargs": {"share_features_extractor": True}}}, ["share_features_extractor"]),
])
def test_bad_privileged_critic_settings_are_refused_naming_the_key(kw, needles):
    base = {"name": "ppo", "family": "rl", "target": TARGETS["ppo"], "privileged_critic": True}
    with pytest.raises(ValueError) as err:
        AgentConfig(**{**base, **kw})
    for needle in needles:
        assert needle in str(err.value)


def test_the_agent_yamls_default_to_off():
    from hydra import compose, initialize_config_module

    from rapport.experiments.config import register_configs, to_settings

    register_configs()
    with initialize_config_module(config_module="rapport.conf", version_base="1.3"):
        for agent in ("ppo", "maskable_ppo"):
            settings = to_settings(compose("train", overrides=[f"agent={agent}"]))
            assert settings.agent.privileged_critic is False
            on = to_settings(compose("train", overrides=[f"agent={agent}", "agent.privileged_critic=true"]))
            assert on.agent.privileged_critic is True
