"""A synthetic large-action contextual bandit with a creative catalogue, whose truth is exact.

The check for :mod:`rapport.agents.ope.mips` (its test and ``scripts/bench_mips.py``): C creatives,
each with categorical attributes; the expected reward depends on the context and on a subset of
the attributes only (the *relevant* ones), so MIPS marginalising over them is unbiased
(no direct effect), while IPS must weight by the creative's identity.

* **Contexts.** A finite population of ``n_types`` context vectors x_t ~ N(0, I_d), drawn
  uniformly: the value of a policy, E_t Σ_a π(a|x_t) q(x_t, a), is then an exact finite sum.
* **Reward.** q(x, a) = Σ_{k relevant} (α_{k, ℓ_k(a)} + x · θ_{k, ℓ_k(a)}), ℓ_k(a) the creative's
  level of attribute k, α ~ N(0, 0.5²), θ ~ N(0, 0.5² I / d); the observed reward adds
  N(0, ``noise_sd``²) noise.
* **Logger** π0 = softmax(β0 (q + b0_a)) over the catalogue: it knows the reward roughly and has
  a per-creative preference b0_a ~ N(0, ``creative_sd``²) (every creative keeps a positive
  probability, so every embedding is supported).
* **Target** π = (1 − ε) softmax(β1 (q + b1_a)) + ε uniform, a sharper policy with its own
  per-creative preferences b1: it concentrates on a few creatives per context that the logger
  shows with probability of order 1/C, which is what makes IPS's weights grow with C; their
  embeddings are shown with probability of order 1/E, which keeps MIPS's weights bounded.

The constants are a *calibration target* for the check (a regime where IPS struggles at
C = 10^3–10^4 and the assumption of MIPS holds by construction), not estimates of anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rapport.agents.ope.estimators import BanditData, dr, ips, snips
from rapport.agents.ope.mips import (
    DEFAULT_CHUNK_CELLS,
    marginal_bandit_data,
    marginal_weights,
    mips_terms,
)

ATTRIBUTES = ("theme", "category", "imagery", "tone", "explicitness")
LEVELS = (6, 5, 4, 3, 3)
"""Levels per attribute (explicitness has three, as the simulator's catalogue)."""
RELEVANT = ("theme", "imagery", "tone")
"""The attributes the synthetic reward depends on (6 × 4 × 3 = 72 embedding values)."""


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


@dataclass(frozen=True, eq=False)
class CatalogueBandit:
    """The world: attributes, per-type expected rewards and both policies' distributions."""

    contexts: np.ndarray
    """(n_types, d) context of each type (drawn uniformly)."""
    attributes: dict[str, np.ndarray]
    """attribute name -> (C,) int levels."""
    relevant: tuple[str, ...]
    q: np.ndarray
    """(n_types, C) expected reward of each creative in each context."""
    behaviour: np.ndarray
    """(n_types, C) float32 logging distribution π0."""
    target: np.ndarray
    """(n_types, C) float32 target distribution π."""
    noise_sd: float
    cdf: np.ndarray
    """(n_types · C,) π0's cumulative distribution per type, type t's row offset by t (sampling)."""

    @property
    def n_actions(self) -> int:
        return int(self.q.shape[1])

    def value(self, dist: np.ndarray | None = None) -> float:
        """Exact value E_t Σ_a π(a|x_t) q(x_t, a) (the target's when ``dist`` is None)."""
        dist = self.target if dist is None else dist
        return float(np.einsum("tc,tc->t", dist.astype(np.float64), self.q).mean())

    def sample(self, n: int, rng: np.random.Generator) -> LoggedRounds:
        """n logged rounds: types uniform, creatives from π0, rewards q + noise."""
        t = rng.integers(0, self.contexts.shape[0], n)
        C = self.n_actions
        a = np.searchsorted(self.cdf, t + rng.random(n), side="right") - t * C
        a = np.clip(a, 0, C - 1)
        r = self.q[t, a] + self.noise_sd * rng.standard_normal(n)
        return LoggedRounds(t, a, r, self.behaviour[t, a].astype(np.float64))

    def rows(self, table: np.ndarray, types: np.ndarray):
        """A :data:`rapport.agents.ope.mips.DistributionSource` for logged rows of these types."""
        return lambda start, stop: table[types[start:stop]]


@dataclass(frozen=True, eq=False)
class LoggedRounds:
    types: np.ndarray
    actions: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray


def make_catalogue_bandit(n_actions: int, seed: int, *, n_types: int = 200, dim: int = 5,
                          beta_behaviour: float = 1.0, beta_target: float = 6.0, creative_sd: float = 0.5,
                          epsilon: float = 0.1, noise_sd: float = 1.0) -> CatalogueBandit:
    """The world of the module docstring with ``n_actions`` creatives (attributes drawn uniformly)."""
    if n_actions < 2:
        raise ValueError(f"n_actions must be >= 2, got {n_actions}")
    if not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    rng = np.random.default_rng(seed)
    attributes = {name: rng.integers(0, k, n_actions) for name, k in zip(ATTRIBUTES, LEVELS, strict=True)}
    x = rng.standard_normal((n_types, dim))
    q = np.zeros((n_types, n_actions))
    for name in RELEVANT:
        k = LEVELS[ATTRIBUTES.index(name)]
        alpha = 0.5 * rng.standard_normal(k)
        theta = 0.5 / np.sqrt(dim) * rng.standard_normal((k, dim))
        q += (alpha[None, :] + x @ theta.T)[:, attributes[name]]
    b0 = creative_sd * rng.standard_normal(n_actions)
    b1 = creative_sd * rng.standard_normal(n_actions)
    behaviour = _softmax(beta_behaviour * (q + b0))
    target = (1 - epsilon) * _softmax(beta_target * (q + b1)) + epsilon / n_actions
    behaviour, target = behaviour.astype(np.float32), target.astype(np.float32)
    cdf = np.cumsum(behaviour, axis=1, dtype=np.float64)
    cdf /= cdf[:, -1:]
    cdf += np.arange(n_types)[:, None]
    return CatalogueBandit(x, attributes, RELEVANT, q, behaviour, target, noise_sd, cdf.ravel())


def attribute_features(attributes: dict[str, np.ndarray], actions: np.ndarray) -> np.ndarray:
    """(n, Σ levels) one-hot attribute levels of the given creatives (for a reward model)."""
    cols = []
    for name in attributes:
        lv = attributes[name]
        k = int(lv.max()) + 1
        cols.append(np.eye(k)[lv[actions]])
    return np.concatenate(cols, axis=1)


def expected_attribute_features(attributes: dict[str, np.ndarray], dist: np.ndarray) -> np.ndarray:
    """(rows, Σ levels) Σ_a π(a|x) onehot(a): attribute-level marginals of a distribution."""
    cols = []
    for name in attributes:
        lv = attributes[name]
        k = int(lv.max()) + 1
        onehot = np.zeros((lv.shape[0], k), dist.dtype)
        onehot[np.arange(lv.shape[0]), lv] = 1
        cols.append(dist @ onehot)
    return np.concatenate(cols, axis=1).astype(np.float64)


ESTIMATORS = ("ips", "snips", "dr", "mips", "snmips", "mdr")
"""What :func:`estimate_once` reports."""


def estimate_once(world: CatalogueBandit, n: int, rng: np.random.Generator, *,
                  columns: tuple[str, ...] | None = None, ridge: float = 1.0,
                  chunk_cells: int | None = None, target_features: np.ndarray | None = None) -> dict[str, float]:
    """Log n rounds under π0 and estimate π's value by every estimator of :data:`ESTIMATORS`.

    The reward model of DR and MDR is a ridge regression on [1, x, one-hot levels of the
    marginalised ``columns``] (main effects only: misspecified, as the true reward has
    context × attribute interactions), fitted in sample; it depends on the creative only
    through its embedding, as MDR needs. ``target_features``: the precomputed
    :func:`expected_attribute_features` of the target over ``columns`` (per context type).
    """
    columns = world.relevant if columns is None else tuple(columns)
    log = world.sample(n, rng)
    t, a = log.types, log.actions
    chosen = {c: world.attributes[c] for c in columns}
    ctx = np.concatenate([np.ones((n, 1)), world.contexts[t]], axis=1)
    phi = np.concatenate([ctx, attribute_features(chosen, a)], axis=1)
    beta = np.linalg.solve(phi.T @ phi + ridge * np.eye(phi.shape[1]), phi.T @ log.reward)
    if target_features is None:
        target_features = expected_attribute_features(chosen, world.target)
    phi_target = np.concatenate([ctx, target_features[t]], axis=1)
    q_logged, q_target = phi @ beta, phi_target @ beta
    pi = world.target[t, a].astype(np.float64)
    data = BanditData(log.reward, log.propensity, pi, q_logged, q_target)
    out = {"ips": ips(data).value, "snips": snips(data).value, "dr": dr(data).value,
           "ips_max_weight": data.weight_diagnostics()["max_weight"],
           "ips_ess_share": data.weight_diagnostics()["ess_share"]}
    mw = marginal_weights(a, world.rows(world.target, t), world.rows(world.behaviour, t), world.attributes,
                          columns, behaviour_propensity=log.propensity,
                          chunk_cells=chunk_cells or DEFAULT_CHUNK_CELLS)
    mdata = marginal_bandit_data(log.reward, mw, q_logged=q_logged, q_target=q_target)
    for name in ("mips", "snmips", "mdr"):
        out[name] = mips_terms(mdata, name).value
    out["mips_max_weight"] = mw.diagnostics["max_weight"]
    out["mips_ess_share"] = mw.diagnostics["ess_share"]
    return out


def replicate(n_actions: int, n: int, replicates: int, seed: int, **kwargs) -> tuple[float, list[dict[str, float]]]:
    """The exact truth and ``replicates`` independent logs' estimates, one world (``seed``)."""
    world = make_catalogue_bandit(n_actions, seed)
    columns = tuple(kwargs.pop("columns", None) or world.relevant)
    feats = expected_attribute_features({c: world.attributes[c] for c in columns}, world.target)
    runs = [estimate_once(world, n, np.random.default_rng([seed, r]), columns=columns, target_features=feats, **kwargs)
            for r in range(replicates)]
    return world.value(), runs


def summarise(truth: float, runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Bias, standard deviation and RMSE against the truth per estimator, over replicates."""
    out = {}
    for name in ESTIMATORS:
        v = np.array([r[name] for r in runs])
        err = v - truth
        out[name] = {"bias": float(err.mean()), "sd": float(v.std(ddof=1)),
                     "rmse": float(np.sqrt(np.mean(err ** 2))),
                     "bias_se": float(v.std(ddof=1) / np.sqrt(len(v)))}
    for name in ("ips", "mips"):
        out[name]["mean_max_weight"] = float(np.mean([r[f"{name}_max_weight"] for r in runs]))
        out[name]["mean_ess_share"] = float(np.mean([r[f"{name}_ess_share"] for r in runs]))
    return out
