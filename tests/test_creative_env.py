"""Creative catalogue in the simulator (issue 15, ``rapport.envs.creative``): off is today's env
bit for bit; on, match lifts response, repetition wears a creative out and rest restores it in
a bounded per-person memory, explicit creative costs privacy, and bad input is named."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import yaml

import rapport.envs as envs
from rapport.envs.creative import (
    ATTRIBUTES,
    TASTE_SCALE,
    CreativeModel,
    catalogue,
    load_catalogue,
    write_catalogue,
)
from rapport.envs.mechanism_params import EXPLICITNESS_LEVELS

CONF = Path(__file__).resolve().parents[1] / "conf"


def _digest(scenario, n=2000, weeks=20, seed=7, mode="next_step") -> str:
    """sha256 of obs, reward, terminated, truncated and info over ``weeks`` of random actions."""
    env = envs.PopulationEnv(num_envs=n, scenario=scenario, horizon=15, autoreset_mode=mode,
                             value_discount=0.998)
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, dict):
            for k in sorted(x):
                h.update(k.encode())
                feed(x[k])
        elif isinstance(x, np.ndarray):
            h.update(str(x.dtype).encode())
            h.update(np.ascontiguousarray(x).tobytes())
        else:
            h.update(repr(x).encode())

    obs, info = env.reset(seed=seed)
    feed(obs)
    feed(info)
    rng = np.random.default_rng(seed)
    nvec = env.single_action_space.nvec
    for _ in range(weeks):
        for x in env.step(np.stack([rng.integers(0, k, n) for k in nvec], axis=1)):
            feed(x)
    return h.hexdigest()


# computed on the branch base (cb8745d), before the creative module existed
BASE_DIGESTS = {
    ("retail", "next_step"): "0bc75f1828ac2f42d43584a24a808ff588643341eba91b6d1b288dafd833c6b6",
    ("privacy_sensitive", "same_step"): "94704f642703b14bdab6544b0a7cdbc4f7ce39982edbe8d368e17d5e85ea8228",
}


@pytest.mark.parametrize("preset,mode", sorted(BASE_DIGESTS))
def test_count_zero_is_bit_identical_to_the_env_without_creatives(preset, mode):
    explicit_off = envs.get_scenario(preset, creative={"count": 0})
    assert explicit_off == envs.get_scenario(preset)
    assert explicit_off.to_dict() == envs.get_scenario(preset).to_dict()
    assert "creative" not in explicit_off.to_dict()  # saved files and digests unchanged
    assert _digest(explicit_off, mode=mode) == BASE_DIGESTS[(preset, mode)]
    env = envs.PopulationEnv(num_envs=3, scenario=explicit_off)
    assert env.action_space.shape == (3, 3) and env.creative_embeddings.shape == (0, 0)


def _creative_env(n=400, count=20, preset="retail", horizon=30, **creative):
    sc = envs.get_scenario(preset, creative={"count": count, **creative})
    return envs.PopulationEnv(num_envs=n, scenario=sc, horizon=horizon)


def _all_matches(env) -> np.ndarray:
    """(n, C) latent match of every person with every creative, from the state."""
    cat = env.sim.model.catalogue
    q = env.sim.state.creative_taste.astype(np.float64) * TASTE_SCALE
    return (q[cat.level_offset].sum(axis=0) * cat.inv_norm[:, None]).T


def test_catalogue_interface():
    env = _creative_env(n=5, count=30)
    assert list(env.single_action_space.nvec) == [6, 8, 4, 30]
    emb = env.creative_embeddings
    assert emb.shape == (30, 16) and emb.dtype == np.float32 and not emb.flags.writeable
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    assert len(env.creative_feature_names) == 16
    attrs = env.creative_attributes
    assert tuple(attrs) == ATTRIBUTES
    assert attrs["explicitness"].max() < len(EXPLICITNESS_LEVELS)
    assert attrs["category"].max() < env.scenario.offers.n_categories
    # the identity embedding is the normalised one-hot attribute vector
    onehot = np.zeros((30, 16))
    for row, offset in enumerate(env.sim.model.catalogue.level_offset.T):
        onehot[row, offset] = 1
    np.testing.assert_allclose(emb, onehot / np.sqrt(5), rtol=1e-6)
    # another dimension: a fixed random projection, still unit rows, same catalogue seed
    other = _creative_env(n=5, count=30, embedding_dim=8)
    assert other.creative_embeddings.shape == (30, 8)
    assert other.creative_feature_names[0] == "embedding_0"
    np.testing.assert_array_equal(other.creative_attributes["theme"], attrs["theme"])
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.tile([1, 0, 0, 7], (5, 1)))
    contacted = info["channel"] > 0
    assert set(info["creative"]) == {"id", "match", "wear"}
    np.testing.assert_array_equal(info["creative"]["id"], np.where(contacted, 7, -1))
    assert env.observation_space.shape == (5, len(envs.FEATURE_NAMES))  # taste stays latent


def test_match_is_taste_dot_embedding():
    env = _creative_env(n=300, count=12)
    env.reset(seed=3)
    ids = np.arange(300) % 12
    _, _, _, _, info = env.step(np.column_stack([np.ones(300, int), np.zeros((300, 2), int), ids]))
    rows = np.flatnonzero(info["creative"]["id"] >= 0)
    np.testing.assert_allclose(info["creative"]["match"][rows], _all_matches(env)[rows, ids[rows]],
                               rtol=1e-5, atol=1e-5)


def test_well_matched_creative_lifts_response_on_common_random_numbers():
    n = 3000
    runs = {}
    for arm in ("best", "worst"):
        env = _creative_env(n=n, count=50)
        env.reset(seed=11)
        m = _all_matches(env)
        ids = m.argmax(axis=1) if arm == "best" else m.argmin(axis=1)
        act = np.column_stack([np.ones(n, int), np.zeros((n, 2), int), ids])
        _, _, _, _, info = env.step(act)
        runs[arm] = info
    best, worst = runs["best"], runs["worst"]
    np.testing.assert_array_equal(best["channel"], worst["channel"])  # the same people reached
    hit = (best["channel"] > 0) & best["latent"]["alive"]
    assert hit.sum() > 1000
    assert (best["creative"]["match"][hit] > worst["creative"]["match"][hit]).all()
    assert (best["latent"]["purchase_rate"][hit] > worst["latent"]["purchase_rate"][hit]).all()
    assert best["latent"]["treatment_effect"][hit].sum() > worst["latent"]["treatment_effect"][hit].sum()
    assert best["orders"].sum() > worst["orders"].sum()


def test_match_strength_zero_and_no_contact_leave_creative_without_effect():
    n = 500
    env = _creative_env(n=n, count=10, match_strength=0.0, appeal_spread=0.0)
    env.reset(seed=2)
    rates = []
    for c in (0, 9):
        env.reset(seed=2)
        _, _, _, _, info = env.step(np.column_stack([np.ones(n, int), np.zeros((n, 2), int),
                                                     np.full(n, c)]))
        rates.append(info["latent"]["purchase_rate"])
    np.testing.assert_array_equal(rates[0], rates[1])
    env.reset(seed=2)
    _, _, _, _, info = env.step(np.column_stack([np.zeros((n, 3), int), np.full(n, 4)]))
    assert (info["creative"]["id"] == -1).all() and (info["creative"]["wear"] == 1).all()
    assert (env.sim.state.creative_ids == -1).all()


def test_wear_out_grows_with_repetition_and_recovers_with_rest():
    cm = CreativeModel(count=5)
    rho = 2 ** (-1 / cm.recovery_half_life)
    env = _creative_env(n=200, count=5)
    env.reset(seed=4)
    reached = env.sim.state.optin[0].copy()  # e-mail
    show = np.column_stack([np.ones(200, int), np.zeros((200, 2), int), np.zeros(200, int)])
    rest = np.zeros((200, 4), int)
    wear = []
    for _ in range(4):
        _, _, _, _, info = env.step(show)
        wear.append(info["creative"]["wear"].copy())
    w = np.array(wear)[:, reached & (env.sim.state.optin[0])]
    assert w.shape[1] > 50
    np.testing.assert_array_equal(w[0], 1.0)  # first exposure: fresh
    assert (np.diff(w, axis=0) < 0).all()  # each repetition wears it out more
    stock = [0.0]
    for _ in range(3):
        stock.append(rho * (stock[-1] + 1))
    np.testing.assert_allclose(w[:, 0], np.exp(-cm.wear_rate * np.array(stock)), rtol=2e-3)
    for _ in range(12):  # twelve weeks without it
        env.step(rest)
    _, _, _, _, info = env.step(show)
    still = reached & env.sim.state.optin[0]
    back = info["creative"]["wear"][still]
    expected = np.exp(-cm.wear_rate * rho**13 * (stock[-1] + 1))
    np.testing.assert_allclose(back, expected, rtol=2e-3)
    assert (back > w[-1, : back.size].max()).all() and back.min() > 0.95


def test_memory_keeps_the_most_worn_creatives_and_replaces_the_weakest():
    env = _creative_env(n=50, count=10)
    env.reset(seed=5)
    s = env.sim.state
    person = int(np.flatnonzero(s.optin[0])[0])
    for c in (0, 0, 0, 1, 2, 3):  # creative 0 worn hardest, then 1, 2, 3 (K = 3 slots)
        a = np.zeros((50, 4), int)
        a[person] = [1, 0, 0, c]
        env.step(a)
    assert sorted(s.creative_ids[:, person]) == [0, 2, 3]  # 1 was the weakest when 3 came
    _, _, _, _, info = env.step(np.where(np.arange(50)[:, None] == person, [1, 0, 0, 1], 0))
    assert info["creative"]["wear"][person] == 1.0  # forgotten: fresh again


def test_creative_state_is_bounded_and_counted_at_1e5_creatives():
    off = envs.PopulationEnv(num_envs=1000)
    env = _creative_env(n=1000, count=100_000)
    env.reset(seed=0)
    s = env.sim.state
    creative_bytes = sum(getattr(s, f).nbytes for f in ("creative_taste", "creative_ids",
                                                          "creative_stock", "creative_last"))
    assert creative_bytes / 1000 <= 64
    assert env.state_bytes_per_customer() - off.state_bytes_per_customer() == creative_bytes / 1000
    rng = np.random.default_rng(0)
    for _ in range(5):
        env.step(np.stack([rng.integers(0, k, 1000) for k in env.single_action_space.nvec], 1))
    assert s.creative_ids.shape == (3, 1000) and s.creative_ids.max() < 100_000
    assert env.state_bytes_per_customer() * 1000 == s.nbytes()


def _explicitness_catalogue(tmp_path) -> str:
    path = tmp_path / "three.csv"
    path.write_text("creative_id,theme,category,imagery,tone,explicitness\n"
                    "0,0,0,0,0,generic\n1,0,0,0,0,product_based\n2,0,0,0,0,explicit_personal\n")
    return str(path)


def test_explicit_creative_raises_privacy_backlash(tmp_path):
    n = 3000
    path = _explicitness_catalogue(tmp_path)
    results = {}
    for c, interaction in ((0, 1.0), (2, 1.0), (2, 0.0)):
        sc = envs.get_scenario("privacy_sensitive", creative={
            "count": 3, "catalogue_path": path, "match_strength": 0.0,
            "privacy_interaction": interaction})
        env = envs.PopulationEnv(num_envs=n, scenario=sc, horizon=10)
        env.reset(seed=9)
        trust0 = env.sim.state.trust.copy()
        act = np.column_stack([np.ones(n, int), np.zeros((n, 2), int), np.full(n, c)])
        _, _, _, _, info = env.step(act)
        results[(c, interaction)] = (info, trust0, env.sim.state.trust.copy())
    generic, explicit, harmless = results[(0, 1.0)], results[(2, 1.0)], results[(2, 0.0)]
    hit = (generic[0]["channel"] > 0) & (generic[1] < 1)
    assert hit.sum() > 1000
    rate_g, rate_e = generic[0]["latent"]["purchase_rate"], explicit[0]["latent"]["purchase_rate"]
    alive = hit & generic[0]["latent"]["alive"]
    assert (rate_e[alive] < rate_g[alive]).all()  # creepiness lowers the lift and the log rate
    assert explicit[2][hit].mean() < generic[2][hit].mean() - 0.01  # and costs trust
    assert explicit[0]["opted_out"].sum() > generic[0]["opted_out"].sum()  # and consent
    # generic creative adds no creepiness; privacy_interaction = 0 turns the interaction off
    no_buy = generic[0]["orders"] == 0
    np.testing.assert_array_equal(generic[2][no_buy], generic[1][no_buy])
    np.testing.assert_array_equal(harmless[0]["latent"]["purchase_rate"], rate_g)


def test_catalogue_file_round_trip_and_malformed_lines(tmp_path):
    env = _creative_env(n=2, count=25, catalogue_seed=3)
    path = write_catalogue(tmp_path / "cat.csv", env.creative_attributes)
    assert path.read_text().splitlines()[0] == "creative_id,theme,category,imagery,tone,explicitness"
    loaded = _creative_env(n=2, count=25, catalogue_seed=3, catalogue_path=str(path))
    np.testing.assert_array_equal(loaded.creative_embeddings, env.creative_embeddings)
    for name in ATTRIBUTES:
        np.testing.assert_array_equal(loaded.creative_attributes[name], env.creative_attributes[name])
    # any order of ids, names for explicitness
    shuffled = tmp_path / "shuffled.csv"
    lines = path.read_text().splitlines()
    shuffled.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")
    attrs = load_catalogue(shuffled, CreativeModel(count=25), 3)
    np.testing.assert_array_equal(attrs["tone"], env.creative_attributes["tone"])

    def bad(body: str, match: str, count: int = 2):
        p = tmp_path / "bad.csv"
        p.write_text(body)
        with pytest.raises(ValueError, match=match):
            load_catalogue(p, CreativeModel(count=count), 3)

    header = "creative_id,theme,category,imagery,tone,explicitness\n"
    bad(header + "0,0,0,0,0,0\n1,0,x,0,0,0\n", r"line 3: field 'category' must be an integer in 0\.\.2")
    bad(header + "0,0,0,0,0,0\n1,0,0,0\n", r"line 3: expected 6 fields")
    bad(header + "0,0,0,0,0,0\n1,0,0,0,0,very_personal\n", r"line 3: field 'explicitness'")
    bad(header + "0,0,0,0,0,0\n5,0,0,0,0,0\n", r"line 3: field 'creative_id' must be .*0\.\.1")
    bad(header + "0,0,0,0,0,0\n0,1,0,0,0,0\n", r"line 3: field 'creative_id' 0 appears twice")
    bad(header + "0,9,0,0,0,0\n", r"line 2: field 'theme' must be an integer in 0\.\.3", count=1)
    bad("id,theme\n0,0\n", r"line 1: header must be creative_id,theme")
    bad(header + "0,0,0,0,0,0\n", r"creative\.count \(2\) must equal the number of creatives .*\(1\)")


@pytest.mark.parametrize("creative,match", [
    ({"count": -1}, r"creative\.count must be an integer in \[0, 100000\]"),
    ({"count": 100_001}, r"creative\.count"),
    ({"count": 1.5}, r"creative\.count"),
    ({"count": 5, "embedding_dim": 0}, r"creative\.embedding_dim must be an integer in \[1, 256\]"),
    ({"count": 5, "memory_slots": 9}, r"creative\.memory_slots"),
    ({"count": 5, "explicitness_shares": [0.5, 0.5]}, r"creative\.explicitness_shares"),
    ({"count": 5, "explicitness_shares": [0.5, 0.4, 0.4]}, r"must sum to 1"),
    ({"count": 5, "wear_rate": -1.0}, r"creative\.wear_rate"),
    ({"count": 5, "recovery_half_life": 0.0}, r"creative\.recovery_half_life"),
    ({"count": 0, "catalogue_path": "x.csv"}, r"creative\.catalogue_path needs creative\.count >= 1"),
    ({"count": 5, "bogus": 1}, r"unknown key\(s\) \['bogus'\] in scenario\.creative"),
])
def test_bad_creative_config_is_named(creative, match):
    with pytest.raises(ValueError, match=match):
        envs.get_scenario("retail", creative=creative)


def test_bad_creative_actions_are_named():
    env = _creative_env(n=4, count=10)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\(4, 4\).*action\[:, 3\] = creative id, is missing"):
        env.step(np.zeros((4, 3), int))
    with pytest.raises(ValueError, match=r"action\[:, 3\] \(creative id\).*row 2 has 10, valid range is 0\.\.9"):
        env.step(np.array([[1, 0, 0, 0], [1, 0, 0, 9], [1, 0, 0, 10], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"action\[:, 3\].*-1"):
        env.step(np.array([[1, 0, 0, -1]] * 4))
    with pytest.raises(ValueError, match=r"customer row 0 has channel 6"):
        env.step(np.array([[6, 0, 0, 0]] * 4))
    with pytest.raises(ValueError, match=r"creative\.count must be >= 1"):
        catalogue(CreativeModel(), 3)
    with pytest.raises(ValueError, match=r"shape \(2, 4\) = \(customers, \[channel, offer, spend level, creative\]\).*got \(2, 5\)"):
        envs.PopulationEnv(num_envs=2, scenario=env.scenario).sim.check_action(np.zeros((2, 5), int))


@pytest.mark.parametrize("mode", ["next_step", "same_step"])
def test_respawned_rows_get_fresh_creative_state(mode):
    n = 60
    sc = envs.get_scenario("retail", creative={"count": 8})
    env = envs.PopulationEnv(num_envs=n, scenario=sc, horizon=3, autoreset_mode=mode)
    env.reset(seed=1)
    s = env.sim.state
    taste0 = s.creative_taste.copy()
    act = np.column_stack([np.ones(n, int), np.zeros((n, 2), int), np.arange(n) % 8])
    for _ in range(3 if mode == "same_step" else 4):
        env.step(act)
    assert (s.episode == 1).all()
    assert (s.creative_ids == -1).all() and (s.creative_stock == 0).all()
    assert not np.array_equal(s.creative_taste, taste0)  # a new person, a new taste
    fresh = envs.PopulationEnv(num_envs=n, scenario=sc, horizon=3)
    fresh.reset(seed=1)
    fresh.reset()  # episode 1 of the same seed
    np.testing.assert_array_equal(s.creative_taste, fresh.sim.state.creative_taste)


def test_taste_is_common_random_numbers_and_customer_env_matches_a_row():
    sc = envs.get_scenario("privacy_sensitive", creative={"count": 6})
    big = envs.PopulationEnv(num_envs=40, scenario=sc, horizon=8)
    shard = envs.PopulationEnv(num_envs=10, scenario=sc, horizon=8, customer_offset=30)
    big.reset(seed=6)
    shard.reset(seed=6)
    np.testing.assert_array_equal(big.sim.state.creative_taste[:, 30:], shard.sim.state.creative_taste)
    single = envs.CustomerEnv(scenario=sc, horizon=8, customer_index=33)
    single.reset(seed=6)
    assert single.action_space.shape == (4,)
    np.testing.assert_array_equal(single.creative_embeddings, big.creative_embeddings)
    rng = np.random.default_rng(1)
    for _ in range(6):
        a = np.stack([rng.integers(0, k, 40) for k in big.single_action_space.nvec], 1)
        a[33, 0] = 1 + (a[33, 0] % 5)
        _, r, _, _, info = big.step(a)
        _, r1, _, _, info1 = single.step(a[33])
        assert r1 == pytest.approx(float(r[33]), abs=0)
        assert info1["creative"] == {k: v[33].item() for k, v in info["creative"].items()}


def test_lookahead_and_myopic_profit_take_the_creative_column():
    env = _creative_env(n=30, count=5, horizon=10)
    env.reset(seed=0)
    q = env.lookahead_values(np.array([[0, 0, 0, 0], [1, 0, 0, 2]]),
                             lambda obs, mask: np.zeros((obs.shape[0], 4), int), weeks=2, samples=1)
    assert q.shape == (30, 2) and np.isfinite(q).all()
    m = _all_matches(env)
    best = np.column_stack([np.ones(30, int), np.zeros((30, 2), int), m.argmax(1)])
    worst = np.column_stack([np.ones(30, int), np.zeros((30, 2), int), m.argmin(1)])
    assert env.expected_myopic_profit(best).sum() > env.expected_myopic_profit(worst).sum()
    with pytest.raises(ValueError, match=r"candidates must have shape \(K, 4\)"):
        env.lookahead_values(np.zeros((2, 3), int), lambda o, m: np.zeros((o.shape[0], 4), int))


def test_creative_env_preset_turns_it_on():
    cfg = yaml.safe_load((CONF / "env" / "creative.yaml").read_text())
    sc = envs.get_scenario(cfg["scenario"], **cfg["overrides"])
    assert sc.creative.count == 1000 and sc.purchase == envs.get_scenario("retail").purchase
    env = envs.PopulationEnv(num_envs=3, scenario=sc)
    assert env.single_action_space.nvec[-1] == 1000
    round_trip = envs.Scenario.from_dict(sc.to_dict())
    assert round_trip == sc


def test_gymnasium_checker_and_pickle_with_a_catalogue():
    import pickle

    from gymnasium.utils.env_checker import check_env

    sc = envs.get_scenario("retail", creative={"count": 40})
    check_env(envs.CustomerEnv(scenario=sc, customer_index=5), skip_render_check=True)
    env = envs.PopulationEnv(num_envs=50, scenario=sc, horizon=10)
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    env.step(np.stack([rng.integers(0, k, 50) for k in env.single_action_space.nvec], 1))
    clone = pickle.loads(pickle.dumps(env))
    a = np.stack([rng.integers(0, k, 50) for k in env.single_action_space.nvec], 1)
    r1, r2 = env.step(a), clone.step(a)
    np.testing.assert_array_equal(r1[1], r2[1])
    np.testing.assert_array_equal(r1[4]["creative"]["wear"], r2[4]["creative"]["wear"])
    assert clone.sim.state.creative_taste.flags.f_contiguous  # person-major after a pickle
