"""Random *valid* customer observations, for parity tests and benchmarks of exported policies.

Each feature is drawn in its own range and type (counts are integers, opt-ins and stages are
0/1 with exactly one stage, recency never exceeds tenure, ...), broader than any one simulated
population, so that parity checks cover opt-in patterns and magnitudes a short simulation might
not reach. Unknown feature names get U(0, 1).
"""

from __future__ import annotations

import numpy as np

from agents.protocol import DecisionSchema

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
