"""rapport-log and rapport-ope: logging, ground truth with common random numbers, the benchmark
app end to end, estimators against the simulator's truth, and the promotion gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

import rapport.envs as envs
from rapport.agents.baselines import DoNothing, MassMarketing, RFMSegmentRules
from rapport.agents.ope import (
    ExplorationMixture,
    LoggedFeedback,
    OffPolicyEvaluator,
    OPESettings,
    promotion_decision,
)
from rapport.experiments.builders import schema_of
from rapport.experiments.log_feedback import collect_feedback, register_log_config
from rapport.experiments.log_feedback import run as run_log
from rapport.experiments.ope import (
    ground_truth,
    register_ope_config,
    scenario_reward_lower_bound,
    to_ope_config,
)
from rapport.experiments.ope import run as run_ope

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def compose_app(name: str, overrides: list[str]):
    register_log_config()
    register_ope_config()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(name, overrides=overrides)


def rfm_factory(epsilon: float = 0.0, horizon: int = 4):
    def build(env):
        schema = schema_of(env)
        base = RFMSegmentRules(schema, horizon=horizon)
        return ExplorationMixture(base, schema, epsilon=epsilon) if epsilon else base
    return build


# ------------------------------------------------------------------------------ logging


def test_collect_feedback_logs_each_first_episode_decision_with_its_propensity():
    env = envs.PopulationEnv(num_envs=150, horizon=5)
    schema = schema_of(env)
    policy = ExplorationMixture(MassMarketing(schema, horizon=5, every_k_weeks=1), schema, epsilon=0.3)
    log = collect_feedback(env, policy, seed=3, rng=np.random.default_rng(0), weeks=4, store_action_dist=True)
    assert log.n <= 150 * 4 and set(np.unique(log.week)) == {0, 1, 2, 3}
    assert (log.propensity < 1).all() and log.action_dist is not None and log.action_mask is not None
    # the rewards are the env's: replaying the logged actions on the same seed reproduces them
    env2 = envs.PopulationEnv(num_envs=150, horizon=5)
    env2.reset(seed=3)
    for w in range(4):
        rows = np.flatnonzero(log.week == w)
        actions = np.zeros((150, 3), np.int64)
        actions[log.customer_id[rows]] = log.actions[rows]
        reward = env2.step(actions)[1]
        np.testing.assert_allclose(log.reward[rows], reward[log.customer_id[rows]], rtol=1e-6)
    with pytest.raises(ValueError, match="weeks must be in 1..5"):
        collect_feedback(env, policy, seed=3, rng=np.random.default_rng(0), weeks=6)


def test_rapport_log_writes_a_valid_parquet_log(tmp_path):
    out = tmp_path / "rfm.parquet"
    cfg = compose_app("log", ["debug=fast", "tracking=none", "agent=rfm", "log.epsilon=0.2", f"log.output={out}",
                              "env.customers=120", "log.weeks=3"])
    result = run_log(cfg)
    log = LoggedFeedback.read_parquet(out)
    assert log.n == result["logged"].n and set(np.unique(log.week)) == {0, 1, 2}
    assert log.metadata["policy"] == "rfm" and log.metadata["epsilon"] == 0.2
    assert 0 < log.propensity.min() and log.propensity.max() <= 1
    bad = compose_app("log", ["debug=fast", "tracking=none", "log.weeks=99"])
    with pytest.raises(ValueError, match="log.weeks=99 exceeds env.horizon=8"):
        run_log(bad)


# ------------------------------------------------------------------------- ground truth


def test_ground_truth_of_the_behaviour_itself_is_exactly_the_behaviour_value():
    # common random numbers: a candidate acting like the behaviour meets the same customers and
    # the same noise, so its truth equals the behaviour's exactly, in both views
    scenario = envs.get_scenario("retail")
    behaviour, truths = ground_truth(scenario, 4, 800, 0, 7, rfm_factory(), {"same": rfm_factory(),
                                                                           "nothing": lambda env: DoNothing(schema_of(env))},
                                     gamma=1.0, rng_seed=0)
    assert truths["same"].seq == behaviour.seq and truths["same"].bandit == behaviour.bandit
    assert truths["nothing"].seq != behaviour.seq


def test_scenario_reward_lower_bound_holds_on_simulated_weeks():
    scenario = envs.get_scenario("retail")
    bound = scenario_reward_lower_bound(scenario)
    env = envs.PopulationEnv(num_envs=3000, horizon=4)
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    worst = np.inf
    for _ in range(4):
        actions = np.stack([rng.integers(0, k, 3000) for k in env.single_action_space.nvec], axis=1)
        worst = min(worst, float(env.step(actions)[1].min()))
    assert bound <= worst < 0
    assert bound >= -(max(c.cost for c in scenario.channels) + 10.0)


def test_estimators_agree_with_the_simulators_truth():
    """Behaviour: RFM rules + 30 % exploration; candidate: the RFM rules alone (weights <= 1/0.7
    per week). Over R independent worlds the mean error of each unbiased estimator is within
    4 standard errors of 0 (+ the truth's own Monte-Carlo error); a 4-sigma miss has probability
    ~6e-5 for an unbiased estimator."""
    scenario = envs.get_scenario("retail")
    H, n, R = 4, 800, 8
    settings = OPESettings(bandit_estimators=("ips", "snips", "dr"), sequential_estimators=("pdis", "wpdis", "seq_dr"),
                           n_boot=0, horizon=H)
    errors: dict[str, list[float]] = {}
    truth_se = {"bandit": 0.0, "seq": 0.0}
    for rep in range(R):
        world = 1000 + rep
        _, truths = ground_truth(scenario, H, 6000, n, world, rfm_factory(0.3, H), {"rfm": rfm_factory(0.0, H)},
                                 gamma=1.0, rng_seed=rep)
        truth = truths["rfm"]
        truth_se = {"bandit": max(truth_se["bandit"], truth.bandit_se), "seq": max(truth_se["seq"], truth.seq_se)}
        env = envs.PopulationEnv(num_envs=n, horizon=H)
        rng = np.random.default_rng(rep)
        log = collect_feedback(env, rfm_factory(0.3, H)(env), seed=world, rng=rng)
        report = OffPolicyEvaluator(log, settings, rng).evaluate(rfm_factory(0.0, H)(env), rng)
        for key, est in report.estimates.items():
            errors.setdefault(key, []).append(est.value - getattr(truth, key.split("/")[0]))
    for key, errs in errors.items():
        errs = np.asarray(errs)
        tol = 4 * errs.std(ddof=1) / np.sqrt(R) + 2 * truth_se[key.split("/")[0]]
        assert abs(errs.mean()) < tol, (key, errs.mean(), tol)


# ---------------------------------------------------------------------------- the app


def test_rapport_ope_runs_end_to_end_and_tracks_to_mlflow(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    cfg = compose_app("ope", ["progress=false", "env.customers=600", "env.horizon=3", "bench.sample_sizes=[60,120]",
                              "bench.replications=2", "ope.n_boot=20", "tracking.log_plots=true"])
    out = run_ope(cfg)
    m = out["metrics"]
    for key in ("ope_bench/bandit/ips/n60/rmse", "ope_bench/seq/fqe/n120/coverage", "ope_bench/seq/hcope_pdis/n60/validity",
                "ope_bench/promotion/n120/false_promotion_rate", "ope_bench/truth/mass/seq"):
        assert key in m and np.isfinite(m[key]), key
    # the logging policy's own estimates carry weights of exactly 1
    res = out["results"]
    same = res[(res.candidate == "rfm_explore") & (res.estimator == "ips")]
    assert (same.value == res[(res.candidate == "rfm_explore") & (res.estimator == "snips")].value.to_numpy()).all()
    import mlflow

    runs = mlflow.search_runs(experiment_names=["rapport-ope"])
    assert list(runs.status) == ["FINISHED"]
    client = mlflow.tracking.MlflowClient()
    run_id = runs.run_id.iloc[0]
    assert [a.path for a in client.list_artifacts(run_id, "plots")] == ["plots/ope_benchmark.png"]
    assert "ope_benchmark/summary.csv" in [a.path for a in client.list_artifacts(run_id, "ope_benchmark")]


def test_rapport_ope_config_errors_name_the_key():
    with pytest.raises(ValueError, match="bench.sample_sizes must be integers >= 4"):
        to_ope_config(compose_app("ope", ["bench.sample_sizes=[2]"]))
    with pytest.raises(ValueError, match="unknown bandit estimator 'ipw'"):
        to_ope_config(compose_app("ope", ["ope.bandit_estimators=[ipw]"]))
    with pytest.raises(ValueError, match="bench.behaviour_epsilon must be a number in \\[0, 1\\]"):
        to_ope_config(compose_app("ope", ["bench.behaviour_epsilon=1.5"]))
    assert to_ope_config(compose_app("ope", ["debug=fast"])).env.customers == 300


# ---------------------------------------------------------------------------- promotion


def test_promotion_decision():
    yes = promotion_decision(2.5, 2.0, margin=0.1, delta=0.05)
    assert yes.promote and yes.alias == "champion" and yes.gap == pytest.approx(0.4)
    assert "exceeds" in yes.reason and yes.as_metrics()["promotion/promote"] == 1.0
    no = promotion_decision(2.05, 2.0, margin=0.1)
    assert not no.promote and no.alias is None and "keep the incumbent" in no.reason
    assert not promotion_decision(-np.inf, 2.0).promote
    card = no.as_card()
    assert card["candidate_lower_bound"] == 2.05 and card["bound_name"] == "seq/hcope_pdis"
    with pytest.raises(ValueError, match="incumbent_value must be a number"):
        promotion_decision(1.0, float("nan"))
    with pytest.raises(ValueError, match="margin must be finite and >= 0"):
        promotion_decision(1.0, 0.0, margin=-1)
