"""Policy folders hold data only: every stored kind decides exactly as the policy it was saved
from, and loading never runs code from the store (planted pickles are refused)."""

from __future__ import annotations

import dataclasses
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch

from rapport.agents import baselines as B
from rapport.agents.bandits import LinUCB
from rapport.agents.constraints import BudgetConstraint, ContactRules
from rapport.agents.neural_bandit import NeuralLinearThompson
from rapport.experiments.config import AgentConfig, ConstraintsConfig
from rapport.experiments.export.samples import quick_bandit, quick_population
from rapport.experiments.policy_store import (
    PolicyFolderError,
    UntrustedPolicyError,
    load_policy,
    load_sb3_checkpoint,
    save_policy,
)
from rapport.experiments.sb3_codec import StoredSB3Model

torch.set_num_threads(1)
HORIZON = 8
AGENT = AgentConfig(name="stored", family="baseline", target="rapport.agents.baselines.DoNothing")
RL_AGENT = AgentConfig(name="stored_rl", family="rl", target="rapport.agents.rl.make_ppo")


class Planted:
    """A pickle that writes ``marker`` when unpickled: what an attacker would plant."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('code ran')",)


@pytest.fixture(scope="module")
def world():
    """Observations and masks of a few weeks of a small population (varied states)."""
    env, schema = quick_population(400, horizon=HORIZON)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=3)
    for _ in range(3):
        actions = np.stack([rng.integers(0, k, env.num_envs) for k in schema.nvec], axis=1)
        obs, _, _, _, info = env.step(actions)
    return schema, obs, info["action_mask"]


def _learned(learner, schema, weeks=2, seed=0):
    env, _ = quick_population(600, horizon=HORIZON)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(weeks):
        actions = np.stack([rng.integers(0, k, env.num_envs) for k in schema.nvec], axis=1)
        next_obs, profit, *_ = env.step(actions)
        learner.update(obs, actions, profit.astype(np.float64))
        obs = next_obs
    return learner


def _baselines(schema):
    return {
        "do_nothing": B.DoNothing(schema),
        "uniform_random": B.UniformRandom(schema),
        "mass_marketing": B.MassMarketing(schema, channel="sms", offer="discount_10", spend_level=1,
                                          every_k_weeks=3, phase=1, horizon=HORIZON),
        "rfm_segments": B.RFMSegmentRules(schema, every_k_weeks=1, horizon=HORIZON),
        "drip_campaign": B.DripCampaign(schema, welcome_weeks=(0, 2), welcome_offers=("discount_10", "none"),
                                        horizon=HORIZON),
        "targeting_only": B.TargetingOnly(schema, top_fraction=0.3, every_k_weeks=1, horizon=HORIZON),
        "discount_only": B.DiscountOnly(schema, offer="discount_20", every_k_weeks=2, phase=1, horizon=HORIZON),
        "recommendation_only": B.RecommendationOnly(schema, every_k_weeks=1, horizon=HORIZON),
        "channel_choice_only": B.ChannelChoiceOnly(schema, offer="discount_10", every_k_weeks=1, horizon=HORIZON),
    }


@pytest.fixture(scope="module")
def models(world):
    """One of each learned kind (fitted on two weeks of random actions)."""
    schema = world[0]
    linucb, _ = quick_bandit("linucb", customers=600)
    thompson, _ = quick_bandit("thompson", customers=600)
    epsilon, _ = quick_bandit("epsilon", customers=600)
    raw = _learned(LinUCB(schema, standardize=False, scale_by_noise=False, alpha=0.5), schema)
    neural = _learned(NeuralLinearThompson(schema, hidden=(16,), embedding_dim=8, retrain_every=500,
                                           train_steps=5, batch_size=64, propensity_draws=16), schema)
    assert neural.n_retrains > 0  # the network weights are trained ones, not an initialisation
    return {
        "linear_arm_policy/ucb": linucb.policy(explore=True),
        "linear_arm_policy/greedy": linucb.policy(),
        "linear_arm_policy/thompson": thompson.policy(explore=True),
        "linear_arm_policy/epsilon": epsilon.policy(explore=True),
        "linear_arm_policy/textbook": raw.policy(explore=True),
        "linear_bandit/linucb_learner": linucb,
        "neural_linear_policy": neural.policy(explore=True),
        "neural_linear_thompson": neural,
        "contact_rules": ContactRules(thompson.policy(explore=True), schema, max_contacts_4w=2, quiet_weeks=2,
                                      max_channel_contacts_4w={"sms": 0}),
    }


def _same_decisions(a, b, obs, mask):
    for m in (None, mask):
        ref = a.act(obs, np.random.default_rng(7), action_mask=m)
        got = b.act(obs, np.random.default_rng(7), action_mask=m)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


def _round_trip(policy, schema, folder):
    save_policy(folder, schema=schema, agent=AGENT, constraints=ConstraintsConfig(), core_policy=policy)
    assert not (folder / "policy.pkl").exists()
    return load_policy(folder)


def test_every_baseline_decides_the_same_after_the_store(world, tmp_path):
    schema, obs, mask = world
    for kind, policy in _baselines(schema).items():
        loaded = _round_trip(policy, schema, tmp_path / kind)
        assert json.loads((tmp_path / kind / "meta.json").read_text())["policy"]["kind"] == kind
        assert type(loaded.core) is type(policy)
        _same_decisions(policy, loaded, obs, mask)


def test_every_bandit_kind_decides_the_same_after_the_store(world, models, tmp_path):
    schema, obs, mask = world
    for name, policy in models.items():
        loaded = _round_trip(policy, schema, tmp_path / name.replace("/", "-"))
        assert json.loads((tmp_path / name.replace("/", "-") / "meta.json").read_text())["policy"]["kind"] \
            == name.split("/")[0]
        _same_decisions(policy, loaded, obs, mask)
    # a stored learner goes on learning exactly as the original
    learner = models["linear_bandit/linucb_learner"]
    loaded = _round_trip(learner, schema, tmp_path / "learner").core
    rewards = np.random.default_rng(1).normal(size=len(obs))
    actions = learner.act(obs, np.random.default_rng(2))[0]
    for bandit in (learner, loaded):
        bandit.update(obs, actions, rewards)
    _same_decisions(learner, loaded, obs, mask)


def _perturbed(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # weights unlike any fresh initialisation: a load that dropped them fails
        for p in model.policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return model


@pytest.mark.parametrize("algo", ["ppo", "a2c", "maskable_ppo", "dqn"])
def test_sb3_policies_decide_the_same_after_the_store(world, tmp_path, algo):
    from stable_baselines3.common.vec_env import VecNormalize

    from rapport.agents import rl
    from rapport.agents.rl_policy import SB3Policy
    from rapport.agents.sb3_adapter import BatchedVecEnv

    schema, obs, mask = world
    env, _ = quick_population(16, horizon=HORIZON)
    flat = algo == "dqn"
    venv = BatchedVecEnv(env, flatten_actions=flat)
    norm = None
    if algo == "ppo":
        venv = norm = VecNormalize(venv, norm_obs=True, norm_reward=False)
        norm.obs_rms.mean = obs.mean(axis=0).astype(np.float64)
        norm.obs_rms.var = obs.var(axis=0).astype(np.float64) + 1.0
    make = {"ppo": rl.make_ppo, "a2c": rl.make_a2c, "maskable_ppo": rl.make_maskable_ppo, "dqn": rl.make_dqn}[algo]
    model = _perturbed(make(venv, seed=0) if flat else make(venv, rollout_size=64, seed=0))
    agent = AgentConfig(name=algo, family="rl", target=f"rapport.agents.rl.make_{algo}", flatten_actions=flat)
    for greedy in (True, False):
        folder = tmp_path / f"{algo}-{greedy}"
        save_policy(folder, schema=schema, agent=agent, constraints=ConstraintsConfig(), sb3_model=model,
                    greedy=greedy, obs_normalization=norm)
        loaded = load_policy(folder)
        assert isinstance(loaded.core.model, StoredSB3Model)  # rebuilt from data, not SB3's loader
        original = SB3Policy(model, nvec=schema.nvec if flat else None, greedy=greedy, obs_normalization=norm)
        _same_decisions(original, loaded, obs, mask)
    assert type(loaded.core.model).__name__ == type(model).__name__.removeprefix("Batched")
    # the SB3 checkpoint is still written for training on, behind the pickle opt-in
    with pytest.raises(UntrustedPolicyError, match="trust_pickle=True"):
        load_sb3_checkpoint(folder)
    assert type(load_sb3_checkpoint(folder, trust_pickle=True)).__name__ == type(model).__name__


def test_unstorable_policies_are_refused_with_the_reason(world, tmp_path):
    schema, *_ = world
    oracle = B.Oracle(schema, lambda actions: np.zeros(len(actions)))
    with pytest.raises(TypeError, match="latent truth"):
        save_policy(tmp_path / "o", schema=schema, agent=AGENT, constraints=ConstraintsConfig(), core_policy=oracle)
    budget = BudgetConstraint(B.DoNothing(schema), schema, weekly_budget=10.0)
    with pytest.raises(TypeError, match="weekly_budget_per_customer"):
        save_policy(tmp_path / "b", schema=schema, agent=AGENT, constraints=ConstraintsConfig(), core_policy=budget)

    class Custom(B.MassMarketing):
        pass

    with pytest.raises(TypeError, match="cannot store a policy of type .*Custom; storable kinds: do_nothing"):
        save_policy(tmp_path / "c", schema=schema, agent=AGENT, constraints=ConstraintsConfig(),
                    core_policy=Custom(schema))


# ------------------------------------------------------------------------- no code runs
def _legacy_folder(folder, schema, payload: bytes, fmt="pickle"):
    folder.mkdir()
    fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(schema).items()}
    meta = {"format_version": 1, "format": fmt, "algo": "ppo", "constraints": {}, "schema": fields}
    (folder / "meta.json").write_text(json.dumps(meta))
    (folder / ("policy.pkl" if fmt == "pickle" else "model.zip")).write_bytes(payload)
    return folder


def test_a_planted_pickle_is_refused_and_never_runs(world, tmp_path):
    schema, *_ = world
    marker = tmp_path / "marker"
    folder = _legacy_folder(tmp_path / "planted", schema, pickle.dumps(Planted(marker)))
    with pytest.raises(UntrustedPolicyError, match=r"policy\.pkl.*runs code.*trust_pickle=True") as info:
        load_policy(folder)
    assert "save_policy it again" in str(info.value)
    assert not marker.exists()
    # the gate is what stood between the store and the code: opting in runs it
    load_policy(folder, trust_pickle=True)
    assert marker.read_text() == "code ran"


def test_a_legacy_sb3_zip_needs_the_opt_in(world, tmp_path):
    schema, *_ = world
    folder = _legacy_folder(tmp_path / "old-sb3", schema, b"PK not really", fmt="sb3")
    with pytest.raises(UntrustedPolicyError, match=r"model\.zip only .*unpickles.*trust_pickle=True"):
        load_policy(folder)


def test_a_trusted_legacy_pickle_converts_to_data(world, tmp_path):
    import cloudpickle

    schema, obs, mask = world
    mass = B.MassMarketing(schema, every_k_weeks=1, horizon=HORIZON)
    folder = _legacy_folder(tmp_path / "old", schema, cloudpickle.dumps(mass))
    old = load_policy(folder, trust_pickle=True)
    new = _round_trip(old.core, schema, tmp_path / "new")
    _same_decisions(mass, new, obs, mask)


def test_planted_objects_in_data_files_are_refused(world, models, tmp_path):
    schema, *_ = world
    marker = tmp_path / "marker"
    neural = models["neural_linear_policy"]
    folder = save_policy(tmp_path / "p", schema=schema, agent=AGENT, constraints=ConstraintsConfig(),
                         core_policy=neural)
    torch.save({"body.0.weight": Planted(marker)}, folder / "weights.pt")
    with pytest.raises(PolicyFolderError, match=r"weights\.pt holds more than tensors"):
        load_policy(folder)
    assert not marker.exists()
    np.savez(folder / "arrays.npz", arms=np.array([Planted(marker)], dtype=object))
    folder.joinpath("weights.pt").unlink()
    with pytest.raises(PolicyFolderError, match=r"arrays\.npz is not a plain numpy archive"):
        load_policy(folder)
    assert not marker.exists()


def test_a_planted_sb3_checkpoint_is_never_read_when_serving(world, tmp_path):
    from rapport.agents.rl import make_ppo
    from rapport.agents.sb3_adapter import BatchedVecEnv

    schema, obs, _ = world
    env, _ = quick_population(16, horizon=HORIZON)
    model = make_ppo(BatchedVecEnv(env), rollout_size=64, seed=0)
    folder = save_policy(tmp_path / "sb3", schema=schema, agent=RL_AGENT, constraints=ConstraintsConfig(),
                         sb3_model=model)
    marker = tmp_path / "marker"
    with zipfile.ZipFile(folder / "model.zip", "w") as z:  # SB3's loader would unpickle "data"
        z.writestr("data", json.dumps({"policy_class": {":serialized:": pickle.dumps(Planted(marker)).hex()}}))
    loaded = load_policy(folder)
    loaded.act(obs, np.random.default_rng(0))
    assert not marker.exists()


@pytest.mark.parametrize("change, message", [
    (lambda m: m["policy"].update(kind="os.system"), "unknown policy kind 'os.system'; valid: do_nothing"),
    (lambda m: m["policy"].update(kind="oracle"), "unknown policy kind 'oracle'"),
    (lambda m: m["policy"]["config"].update(__class__="builtins.eval"), "does not build"),
    (lambda m: m.update(format="cloudpickle"), "unknown policy format 'cloudpickle' in .*; valid: data, sb3"),
])
def test_tampered_metadata_builds_nothing_else(world, tmp_path, change, message):
    schema, *_ = world
    folder = save_policy(tmp_path / "p", schema=schema, agent=AGENT, constraints=ConstraintsConfig(),
                         core_policy=B.MassMarketing(schema, horizon=HORIZON))
    meta = json.loads((folder / "meta.json").read_text())
    change(meta)
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(PolicyFolderError, match=message):
        load_policy(folder)


def test_missing_or_corrupt_folders_are_clear_errors(tmp_path):
    with pytest.raises(PolicyFolderError, match="meta.json missing"):
        load_policy(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "meta.json").write_text("{not json")
    with pytest.raises(PolicyFolderError, match="is not valid JSON"):
        load_policy(tmp_path / "bad")
