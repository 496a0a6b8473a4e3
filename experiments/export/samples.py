"""Random *valid* customer observations, for parity tests and benchmarks of exported policies.

Each feature is drawn in its own range and type (counts are integers, opt-ins and stages are
0/1 with exactly one stage, recency never exceeds tenure, ...), broader than any one simulated
population, so that parity checks cover opt-in patterns and magnitudes a short simulation might
not reach. Unknown feature names get U(0, 1).
"""

from __future__ import annotations

import numpy as np

from rapport.agents.protocol import DecisionSchema

__all__ = ["random_observations"]


def random_observations(schema: DecisionSchema, n: int, rng: np.random.Generator,
                        optin_share: float = 0.6) -> np.ndarray:
    """(n, n_features) float32 observations in ``schema.feature_names`` order."""
    names = schema.feature_names
    obs = rng.random((n, len(names))).astype(np.float32)
    col = {name: j for j, name in enumerate(names)}

    def put(name: str, values: np.ndarray) -> None:
        if name in col:
            obs[:, col[name]] = values

    tenure = rng.integers(0, 157, n)
    frequency = np.where(rng.random(n) < 0.3, 0, rng.geometric(0.2, n))
    put("tenure_weeks", tenure)
    put("recency_weeks", np.floor(rng.random(n) * (tenure + 1)))
    put("frequency", frequency)
    put("avg_spend", rng.gamma(2.0, 20.0, n))
    put("p_alive", np.where(frequency == 0, 1.0, rng.random(n)))
    for c in schema.channel_names:
        put(f"optin_{c}", rng.random(n) < optin_share)
        put(f"weeks_since_contact_{c}", rng.integers(0, 53, n))
        put(f"contacts_4w_{c}", rng.integers(0, 5, n))
    offers = rng.integers(0, 9, n)
    put("weeks_since_offer", rng.integers(0, 53, n))
    put("offers_8w", offers)
    put("redemptions_8w", np.floor(rng.random(n) * (offers + 1)))
    stages = [name for name in names if name.startswith("stage_")]
    if stages:
        pick = rng.integers(0, len(stages), n)
        for k, name in enumerate(stages):
            put(name, pick == k)
    put("horizon_progress", rng.random(n))
    return obs


# --------------------------------------------------------------------------- quick policies
# Policies trained for a second or two on a small population: enough structure for parity
# tests and benchmarks of the export path, not for marketing decisions.

SB3_KINDS = ("ppo_vecnormalize", "maskable_ppo", "dqn")
BANDIT_KINDS = ("linucb", "thompson", "epsilon")


def quick_population(customers: int = 256, horizon: int = 8, scenario: str = "retail"):
    """A SAME_STEP population env (what SB3 trains on) and its decision schema."""
    import rapport.envs as envs
    from rapport.experiments.builders import schema_of

    env = envs.PopulationEnv(num_envs=customers, scenario=scenario, horizon=horizon,
                             autoreset_mode="same_step", include_latent=False)
    return env, schema_of(env)


def quick_sb3_policy(kind: str, *, seed: int = 0, customers: int = 256, steps: int = 1024):
    """``(policy, schema, obs_normalization)`` for ``kind`` in :data:`SB3_KINDS`; greedy and
    explore copies of the policy are made with :meth:`SB3Policy` arguments by the caller.
    ``ppo_vecnormalize``'s policy carries the VecNormalize statistics itself (as a trained run's
    does); the VecNormalize is returned too, as an independent reference."""
    from stable_baselines3.common.vec_env import VecNormalize

    from rapport.agents.rl import make_dqn, make_maskable_ppo, make_ppo
    from rapport.agents.rl_policy import SB3Policy
    from rapport.agents.sb3_adapter import BatchedVecEnv

    env, schema = quick_population(customers)
    norm = None
    if kind == "ppo_vecnormalize":
        venv = VecNormalize(BatchedVecEnv(env), norm_obs=True, norm_reward=False)
        model = make_ppo(venv, rollout_size=512, seed=seed)
        norm = venv
    elif kind == "maskable_ppo":
        model = make_maskable_ppo(BatchedVecEnv(env), rollout_size=512, seed=seed)
    elif kind == "dqn":
        model = make_dqn(BatchedVecEnv(env, flatten_actions=True), seed=seed,
                         learning_starts=customers)
    else:
        raise ValueError(f"unknown SB3 kind {kind!r}; valid: {', '.join(SB3_KINDS)}")
    model.learn(steps)
    nvec = schema.nvec if kind == "dqn" else None
    return SB3Policy(model, nvec=nvec, greedy=True, epsilon=0.2 if kind == "dqn" else None,
                     obs_normalization=norm), schema, norm


def quick_bandit(kind: str, *, seed: int = 0, customers: int = 3000, weeks: int = 2):
    """A linear bandit learner (``kind`` in :data:`BANDIT_KINDS`) fitted on ``weeks`` of random
    actions, and the schema."""
    from rapport.agents.bandits import EpsilonGreedy, LinearThompson, LinUCB

    env, schema = quick_population(customers)
    make = {"linucb": lambda: LinUCB(schema), "thompson": lambda: LinearThompson(schema),
            "epsilon": lambda: EpsilonGreedy(schema, epsilon=0.2)}
    if kind not in make:
        raise ValueError(f"unknown bandit kind {kind!r}; valid: {', '.join(BANDIT_KINDS)}")
    bandit = make[kind]()
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    for _ in range(weeks):
        actions = np.stack([rng.integers(0, k, customers) for k in schema.nvec], axis=1)
        next_obs, profit, *_ = env.step(actions)
        bandit.update(obs, actions, profit.astype(np.float64))
        obs = next_obs
    return bandit, schema
