"""Bad bandit hyper-parameters fail at construction with the parameter's name and valid range,
from the constructor and from a Hydra override (``agent.params.alpha=nan`` used to run)."""

import numpy as np
import pytest

from rapport.agents.bandits import EpsilonGreedy, LinearBandit, LinearThompson, LinUCB
from rapport.agents.exploration import rule_from_dict
from rapport.agents.neural_bandit import NeuralLinearThompson
from rapport.agents.protocol import DecisionSchema
from rapport.agents.ridge import DisjointRidge

NAN, INF = float("nan"), float("inf")


def schema() -> DecisionSchema:
    names = ("recency_weeks", "frequency", "tenure_weeks", "avg_spend", "p_alive")
    return DecisionSchema(feature_names=names, nvec=(2, 2, 1), channel_names=("email",),
                          offer_names=("none", "o1"), spend_levels=(0.0,))


BAD = [
    # (constructor, keyword arguments, expected message fragment)
    (LinUCB, {"alpha": NAN}, r"alpha must be a finite number >= 0 .*got nan"),
    (LinUCB, {"alpha": -1}, r"alpha must be a finite number >= 0 .*got -1"),
    (LinUCB, {"alpha": INF}, r"alpha must be a finite number >= 0 .*got inf"),
    (LinUCB, {"alpha": "1.0"}, r"alpha must be a finite number >= 0 .*got '1.0' \(str\)"),
    (LinUCB, {"alpha": True}, r"alpha must be a finite number >= 0 .*\(bool\)"),
    (LinUCB, {"scale_by_noise": "false"}, r"scale_by_noise must be true or false.*'false' \(str\)"),
    (LinUCB, {"scale_by_noise": 0}, r"scale_by_noise must be true or false.*\(int\)"),
    (LinUCB, {"ridge": 0}, r"ridge must be a finite number > 0 .*got 0"),
    (LinUCB, {"ridge": -2.0}, r"ridge must be a finite number > 0 .*got -2"),
    (LinUCB, {"ridge": NAN}, r"ridge must be a finite number > 0 .*got nan"),
    (LinUCB, {"ridge": INF}, r"ridge must be a finite number > 0 .*got inf"),
    (LinUCB, {"standardize": "no"}, r"standardize must be true or false.*'no' \(str\)"),
    (LinUCB, {"standardize": None}, r"standardize must be true or false.*None"),
    (LinUCB, {"refit_growth": -0.5}, r"refit_growth must be a finite number >= 0 .*got -0.5"),
    (LinUCB, {"refit_growth": NAN}, r"refit_growth must be a finite number >= 0 .*got nan"),
    (LinUCB, {"value_discount": NAN}, r"value_discount must be a finite number > 0 and <= 1 .*got nan"),
    (LinUCB, {"reward": "lifetime_value_shaped", "value_discount": 1.5}, r"value_discount must be .*got 1.5"),
    (LinUCB, {"reward": "revenue"}, r"reward must be one of 'profit', 'lifetime_value_shaped'"),
    (LinUCB, {"reward": "ltv_proxy"}, r"'ltv_proxy' was removed"),
    (EpsilonGreedy, {"epsilon": NAN}, r"epsilon must be a finite number >= 0 and <= 1 .*got nan"),
    (EpsilonGreedy, {"epsilon": 1.5}, r"epsilon must be a finite number >= 0 and <= 1 .*got 1.5"),
    (EpsilonGreedy, {"epsilon": -0.1}, r"epsilon must be a finite number >= 0 and <= 1 .*got -0.1"),
    (EpsilonGreedy, {"epsilon": True}, r"epsilon must be .*\(bool\)"),
    (EpsilonGreedy, {"ridge": INF}, r"ridge must be a finite number > 0"),
    (LinearThompson, {"v": NAN}, r"v must be a finite number >= 0 .*got nan"),
    (LinearThompson, {"v": -0.1}, r"v must be a finite number >= 0 .*got -0.1"),
    (LinearThompson, {"propensity_draws": -1}, r"propensity_draws must be an integer >= 0 .*got -1"),
    (LinearThompson, {"propensity_draws": 6.4}, r"propensity_draws must be an integer >= 0 .*6.4 \(float\)"),
    (LinearThompson, {"standardize": 1}, r"standardize must be true or false"),
    (NeuralLinearThompson, {"learning_rate": NAN}, r"learning_rate must be a finite number > 0 .*got nan"),
    (NeuralLinearThompson, {"learning_rate": 0.0}, r"learning_rate must be a finite number > 0 .*got 0"),
    (NeuralLinearThompson, {"v": INF}, r"v must be a finite number >= 0 .*got inf"),
    (NeuralLinearThompson, {"ridge": -1}, r"ridge must be a finite number > 0"),
    (NeuralLinearThompson, {"batch_size": 0}, r"batch_size must be an integer >= 1, got 0"),
    (NeuralLinearThompson, {"retrain_every": 2.5}, r"retrain_every must be an integer >= 1, got 2.5 \(float\)"),
    (NeuralLinearThompson, {"hidden": [64, 0]}, r"hidden \(each layer width\) must be an integer >= 1, got 0"),
]


@pytest.mark.parametrize(("make", "kwargs", "message"), BAD,
                         ids=[f"{m.__name__}-{','.join(f'{k}={v!r}' for k, v in kw.items())}" for m, kw, _ in BAD])
def test_bad_bandit_parameter_is_refused_naming_it(make, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(schema(), **kwargs)


def test_a_corrupt_saved_rule_is_refused_on_load(tmp_path):
    """A state file edited to hold alpha = NaN is refused, not served."""
    bandit = LinUCB(schema())
    state = bandit.state_dict()
    state["rule"] = {**state["rule"], "alpha": NAN}
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        bandit.load_state_dict(state)
    with pytest.raises(ValueError, match="propensity_draws must be an integer"):
        rule_from_dict({"name": "thompson", "v": 1.0, "scale_by_noise": True, "propensity_draws": "64"})


def test_boundary_values_are_valid():
    """The edges of every range are accepted: greedy UCB / TS, always / never explore."""
    LinUCB(schema(), alpha=0, ridge=1e-9, refit_growth=0, value_discount=1, standardize=np.bool_(False))
    EpsilonGreedy(schema(), epsilon=0)
    EpsilonGreedy(schema(), epsilon=1)
    LinearThompson(schema(), v=0.0, propensity_draws=np.int64(0))
    assert LinUCB(schema(), alpha=np.float32(2.5)).rule.alpha == 2.5
    assert DisjointRidge(3, 2, ridge=2).ridge == 2.0
    assert LinearBandit(schema(), rule_from_dict({"name": "greedy"})).model.standardize is True


@pytest.mark.parametrize(("override", "message"), [
    ("agent.params.alpha=nan", "alpha must be a finite number >= 0"),
    ("agent.params.alpha=-1", "alpha must be a finite number >= 0"),
    ("agent.params.ridge=0", "ridge must be a finite number > 0"),
    ("agent.params.standardize=maybe", "standardize must be true or false"),
])
def test_hydra_override_with_bad_bandit_value_fails_before_any_work(override, message):
    from hydra import compose, initialize_config_dir

    from rapport.experiments import builders
    from rapport.experiments.config import register_configs, to_settings
    from tests.test_configs import CONF

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["agent=linucb", "debug=fast", "tracking=none", override])
    settings = to_settings(cfg)
    with pytest.raises(ValueError, match=rf"agent 'linucb' .*{message}"):
        builders.check_agent(settings.agent, settings.env)


def test_hydra_override_turns_standardisation_off():
    from hydra import compose, initialize_config_dir

    from rapport.experiments import builders
    from rapport.experiments.config import register_configs, to_settings
    from tests.test_configs import CONF

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["agent=linucb", "debug=fast", "tracking=none",
                                          "agent.params.standardize=false", "agent.params.scale_by_noise=false"])
    settings = to_settings(cfg)
    builders.check_agent(settings.agent, settings.env)
    env = builders.make_env(settings.env, customers=2)
    learner = builders.build_bandit(settings.agent, builders.schema_of(env))
    assert learner.model.standardize is False and learner.rule.scale_by_noise is False
