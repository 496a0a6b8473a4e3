"""experiment=creative (rapport.experiments.creative): the arms, the paired table, the wear-out curve."""

from __future__ import annotations

import numpy as np
import pytest

from rapport import envs
from rapport.experiments import builders
from rapport.experiments.creative import (
    FIVE_KPIS,
    CreativeStudy,
    main,
    run,
    train_selector,
    wear_out_curve,
)

SMALL = dict(creatives=50, customers=600, horizon=6, train_episodes=1, eval_seeds=(11, 12), n_boot=40)


def test_schema_of_carries_the_catalogue():
    study = CreativeStudy(**SMALL)
    env = envs.PopulationEnv(num_envs=10, scenario=study.world(), horizon=4)
    schema = builders.schema_of(env)
    assert schema.nvec[3] == 50
    assert np.array_equal(schema.creative_embeddings, env.creative_embeddings)
    plain = builders.schema_of(envs.PopulationEnv(num_envs=10, scenario=envs.get_scenario("retail"), horizon=4))
    assert len(plain.nvec) == 3 and plain.creative_embeddings is None


def test_run_reports_five_kpis_paired_against_random_creative(tmp_path):
    summary, wear = run(CreativeStudy(**SMALL), tmp_path)
    arms = {"do_nothing", "random_creative", "best_single", "segment", "personalised", "personalised_top10"}
    assert set(summary.kpis.policy) == arms
    assert set(FIVE_KPIS) <= set(summary.kpis.key)
    diffs = summary.diffs[summary.diffs.key.isin(FIVE_KPIS)]
    assert set(diffs.policy) == arms - {"random_creative"}
    assert (diffs.ci_low <= diffs["diff"]).all() and (diffs["diff"] <= diffs.ci_high).all()
    # doing nothing contacts no one; every e-mail arm contacts the same people (fixed plan)
    contacts = summary.kpis[summary.kpis.key == "kpi/contacts_per_customer"].set_index("policy")["mean"]
    assert contacts["do_nothing"] == 0 and contacts["random_creative"] > 0
    for name in ("wear_out.png", "table.txt", "paired_diffs.csv", "kpis.csv", "wear_out.csv"):
        assert (tmp_path / name).stat().st_size > 0


def test_wear_out_shows_in_the_same_creative_not_in_a_rotating_one():
    study = CreativeStudy(**SMALL)
    curve = wear_out_curve(study, study.world(), weeks=6)
    fixed = curve[curve.arm == "fixed"].sort_values("exposure").wear.to_numpy()
    rotating = curve[curve.arm == "random"].wear.to_numpy()
    assert fixed[0] == pytest.approx(1.0) and np.all(np.diff(fixed) < 0) and fixed[-1] < 0.8
    assert rotating.min() > 0.95


def test_personalised_arm_gives_people_different_creatives_best_single_does_not():
    study = CreativeStudy(**SMALL)
    scenario = study.world()
    env = envs.PopulationEnv(num_envs=300, scenario=scenario, horizon=study.horizon)
    obs, _ = env.reset(seed=99)
    everyone = np.ones(len(obs), bool)
    rng = np.random.default_rng(0)
    personal, curve = train_selector("personalised", study, scenario)
    single, _ = train_selector("best_single", study, scenario)
    assert curve and np.isfinite(curve).all()
    assert np.unique(personal.choose(obs, everyone, rng)[0]).size > 1
    assert np.unique(single.choose(obs, everyone, rng)[0]).size == 1


@pytest.mark.parametrize("bad, key", [({"creatives": 0}, "creatives"), ({"creatives": 100_001}, "creatives"),
                                      ({"train_seed": 11}, "train_seed"), ({"eval_seeds": ()}, "eval_seeds"),
                                      ({"customers": 2}, "customers"), ({"alpha": -1.0}, "alpha")])
def test_bad_settings_name_the_key(bad, key):
    with pytest.raises(ValueError, match=key):
        CreativeStudy(**{**SMALL, **bad})


def test_cli_writes_the_table(tmp_path, capsys):
    main(["creatives=20", "customers=300", "horizon=4", "train_episodes=1", "eval_seeds=[3,4]", "n_boot=20",
          f"out={tmp_path}", f"hydra.run.dir={tmp_path / 'hydra'}"])
    assert "random_creative" in capsys.readouterr().out
    assert (tmp_path / "table.txt").exists()


def test_cli_refuses_bad_keys_and_values(tmp_path, capsys):
    for bad, key in (["creatives=0", "creatives"], ["+colour=blue", "colour"]):
        with pytest.raises(SystemExit) as err:
            main([bad, f"out={tmp_path}", f"hydra.run.dir={tmp_path / 'hydra'}"])
        assert err.value.code != 0
        message = capsys.readouterr().err
        assert key in message and "internal error" not in message
    assert not (tmp_path / "table.txt").exists()


def test_top_k_rotation_draws_from_each_persons_k_best():
    from rapport.agents.creative import TopKRotation

    study = CreativeStudy(**SMALL)
    scenario = study.world()
    personal, _ = train_selector("personalised", study, scenario)
    env = envs.PopulationEnv(num_envs=200, scenario=scenario, horizon=study.horizon)
    obs, _ = env.reset(seed=5)
    rot = TopKRotation(personal, k=5, chunk=64)
    rng = np.random.default_rng(1)
    top5 = np.argsort(-personal.expected_rewards(obs), axis=1)[:, :5]
    weeks = np.stack([rot.choose(obs, np.ones(len(obs), bool), rng)[0] for _ in range(20)], axis=1)
    assert all(set(w) <= set(t) for w, t in zip(weeks, top5, strict=True))
    assert np.mean([len(set(w)) for w in weeks]) > 3  # rotates: most of the 5 show up in 20 draws
    ids, prop = rot.choose(obs, np.arange(len(obs)) % 2 == 0, rng)
    assert np.all(prop[0::2] == 0.2) and np.all(prop[1::2] == 1.0) and np.all(ids[1::2] == 0)
    assert np.array_equal(TopKRotation(personal, k=1).choose(obs, np.ones(len(obs), bool), rng)[0],
                          personal.choose(obs, np.ones(len(obs), bool), rng)[0])
    dist = rot.creative_distribution(obs[:7])
    assert np.allclose(dist.sum(axis=1), 1) and np.all((dist == 0) | (dist == 0.2))
    assert all(set(np.flatnonzero(d)) == set(t) for d, t in zip(dist, top5[:7], strict=True))
    with pytest.raises(ValueError, match="k must be at most"):
        TopKRotation(personal, k=51)
    with pytest.raises(ValueError, match="expected_rewards"):
        TopKRotation(object())


def test_no_direct_effect_holds_in_the_simulator():
    """MIPS over the five attributes is unbiased only if a creative reaches the reward through
    its attributes alone: two creatives with the same attributes give the same first week."""
    study = CreativeStudy(**{**SMALL, "creatives": 2000})
    scenario = study.world()
    env = envs.PopulationEnv(num_envs=400, scenario=scenario, horizon=3)
    attrs = env.creative_attributes
    codes = np.stack([attrs[c] for c in ("theme", "category", "imagery", "tone", "explicitness")], axis=1)
    _, first, counts = np.unique(codes, axis=0, return_index=True, return_counts=True)
    twin_of = {tuple(codes[i]): i for i in first[counts > 1]}
    a = next(iter(twin_of.values()))
    b = next(j for j in range(len(codes)) if j != a and tuple(codes[j]) == tuple(codes[a]))
    other = next(j for j in range(len(codes)) if tuple(codes[j]) != tuple(codes[a]))

    def week(creative: int) -> np.ndarray:
        env.reset(seed=21)
        actions = np.zeros((400, 4), np.int64)
        actions[:, 0] = 1  # e-mail everyone
        actions[:, 3] = creative
        return env.step(actions)[1]

    assert np.array_equal(week(a), week(b))
    assert not np.array_equal(week(a), week(other))
