"""Boundary checks every Rapport policy shares: bad observations and masks fail loudly, rows with
nothing allowed get do-nothing and are counted, never a silent wrong action."""

import numpy as np
import pytest

from rapport.agents.baselines import DoNothing, MassMarketing, UniformRandom
from rapport.agents.protocol import DecisionSchema
from rapport.agents.validation import (
    all_joint_actions,
    check_arms,
    check_batch,
    joint_index,
    sample_allowed,
    split_mask,
)


def population_schema(env) -> DecisionSchema:
    """The schema the composition root injects, read off a ``PopulationEnv``."""
    return DecisionSchema(
        feature_names=env.feature_names, nvec=tuple(int(k) for k in env.single_action_space.nvec),
        channel_names=env.channel_names, offer_names=env.offer_names, spend_levels=env.spend_levels,
        channel_costs=env.channel_costs, offer_discounts=env.offer_discounts)


@pytest.fixture(scope="module")
def retail():
    import rapport.envs as envs
    env = envs.PopulationEnv(num_envs=500, scenario="retail")
    obs, info = env.reset(seed=3)
    return population_schema(env), obs, info["action_mask"]


def test_wrong_width_names_expected_width(retail):
    schema, obs, _ = retail
    width = len(schema.feature_names)
    with pytest.raises(ValueError, match=rf"{width - 1} columns, expected {width}"):
        MassMarketing(schema).act(obs[:, :-1], np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"must be 2-D"):
        MassMarketing(schema).act(obs[0], np.random.default_rng(0))


@pytest.mark.parametrize("bad, kind", [(np.nan, "NaN"), (np.inf, r"\+inf"), (-np.inf, "-inf")])
def test_non_finite_obs_names_column_and_row(retail, bad, kind):
    schema, obs, _ = retail
    obs = obs.copy()
    obs[7, schema.feature_index("avg_spend")] = bad
    with pytest.raises(ValueError, match=rf"{kind} in column 'avg_spend' \(row 7\)"):
        UniformRandom(schema).act(obs, np.random.default_rng(0))


def test_non_numeric_obs_rejected(retail):
    schema, obs, _ = retail
    with pytest.raises(ValueError, match="numeric"):
        DoNothing(schema).act(obs.astype(str), np.random.default_rng(0))


def test_mask_dtype_and_shape_errors(retail):
    schema, obs, mask = retail
    with pytest.raises(ValueError, match="must be bool"):
        DoNothing(schema).act(obs, np.random.default_rng(0), action_mask=mask.astype(np.int8))
    with pytest.raises(ValueError, match=rf"expected \(500, {sum(schema.nvec)}\)"):
        DoNothing(schema).act(obs, np.random.default_rng(0), action_mask=mask[:, :-1])


def test_all_forbidden_dimension_gives_do_nothing_and_is_counted(retail):
    schema, obs, mask = retail
    mask = mask.copy()
    c, o, _ = schema.nvec
    mask[:10, c:c + o] = False  # rows 0-9: no offer value at all, not even "none"
    policy = UniformRandom(schema)
    actions, props = policy.act(obs, np.random.default_rng(1), action_mask=mask)
    assert (actions[:10] == 0).all() and (props[:10] == 1.0).all()
    assert policy.stats["all_forbidden_rows"] == 10
    # the other rows are served normally, inside their masks
    rows = np.arange(10, len(obs))
    for d, m in enumerate(split_mask(mask, schema.nvec)):
        assert m[rows, actions[10:, d]].all()
    policy.act(obs, np.random.default_rng(2), action_mask=mask)
    assert policy.stats["all_forbidden_rows"] == 20


def test_rule_fallback_onto_forbidden_value_raises(retail):
    schema, obs, mask = retail
    mask = mask.copy()
    mask[:, schema.nvec[0]] = False  # offer "none" forbidden, other offers allowed: a rule cannot fall back
    with pytest.raises(ValueError, match=r"forbids value 0 of dimension 1 \(offer\)"):
        MassMarketing(schema, every_k_weeks=2, phase=1).act(obs, np.random.default_rng(0), action_mask=mask)


def test_check_batch_finds_dead_rows(retail):
    schema, obs, mask = retail
    mask = mask.copy()
    assert check_batch(obs, mask, schema).dead_rows is None
    mask[3, :schema.nvec[0]] = False
    assert np.flatnonzero(check_batch(obs, mask, schema).dead_rows).tolist() == [3]


def test_joint_index_round_trip_and_arm_checks():
    nvec = (6, 8, 4)
    arms = all_joint_actions(nvec)
    assert arms.shape == (192, 3)
    assert (joint_index(arms, nvec) == np.arange(192)).all()
    with pytest.raises(ValueError, match="outside nvec"):
        check_arms([[6, 0, 0]], nvec)
    with pytest.raises(ValueError, match="duplicates"):
        check_arms([[1, 0, 0], [1, 0, 0]], nvec)
    with pytest.raises(ValueError, match="non-empty"):
        check_arms(np.zeros((0, 3)), nvec)


def test_sample_allowed_is_uniform_over_allowed_columns():
    allowed = np.array([[False, True, True, False, True]] * 30000)
    choice, n_allowed = sample_allowed(allowed, np.random.default_rng(0))
    assert (n_allowed == 3).all()
    freq = np.bincount(choice, minlength=5) / len(choice)
    assert freq[[0, 3]].sum() == 0
    np.testing.assert_allclose(freq[[1, 2, 4]], 1 / 3, atol=0.015)
