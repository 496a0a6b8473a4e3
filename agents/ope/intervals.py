"""How much to trust an estimate: bootstrap confidence intervals and high-confidence lower bounds.

Bootstrap (:func:`bootstrap_interval`)
    Percentile intervals from resampling *units* with replacement — customers when ``groups``
    is given (a customer's weeks are not independent), rows otherwise — and re-evaluating the
    estimator's :class:`~rapport.agents.ope.estimators.RatioTerms`. The reward model is held fixed, so
    model-fitting variance is not included; the OPE-of-OPE benchmark measures what that costs in
    coverage.

High-confidence lower bound (:func:`hcope_lower_bound`)
    Thomas, Theocharous & Ghavamzadeh (2015), "High Confidence Off-Policy Evaluation", Theorem 1
    with a common threshold c: for independent X_i >= 0 with mean μ and Y_i = min(X_i, c),

        μ >= Ȳ − 7 c ln(2/δ) / (3 (n − 1)) − sqrt(2 ln(2/δ) s²_Y / n)      with prob. >= 1 − δ,

    s²_Y the unbiased sample variance (Maurer & Pontil's empirical Bernstein bound on [0, c];
    truncation only lowers the mean, so the bound holds for μ). c is chosen, as in the paper, on
    a random ``tune_fraction`` of the units by maximising the bound predicted for the rest, and
    the bound is computed on the rest only, which keeps the guarantee exact. The X_i must be
    nonnegative: importance-weighted rewards shifted by a known lower bound on the reward
    (:func:`rapport.agents.ope.evaluate.hcope_value_bound` does this and adds the shift back).
    ``method="t"`` gives the Student-t approximation (Thomas et al. 2015b, "High confidence
    policy improvement", semi-safe): tighter, but without the guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from rapport.agents.ope.estimators import RatioTerms


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    std_error: float
    """Standard deviation of the bootstrap replicates."""


def unit_sums(terms: RatioTerms, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Numerators and denominators summed per unit: (G, k) each."""
    num, den = terms.num, terms.denominators()
    if groups is None:
        return num, den
    _, unit = np.unique(groups, return_inverse=True)
    G = int(unit.max()) + 1
    def agg(a):
        return np.stack([np.bincount(unit, a[:, j], minlength=G) for j in range(a.shape[1])], axis=1)
    return agg(num), agg(den)


def bootstrap_values(terms: RatioTerms, rng: np.random.Generator, *, n_boot: int = 500,
                     groups: np.ndarray | None = None, max_cells: int = 1 << 22) -> np.ndarray:
    """(n_boot,) estimator values on unit-resampled data."""
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")
    num, den = unit_sums(terms, groups)
    G = num.shape[0]
    out = np.empty(n_boot)
    chunk = max(1, max_cells // max(G, 1))
    for s in range(0, n_boot, chunk):
        b = min(chunk, n_boot - s)
        draws = rng.integers(0, G, size=(b, G))
        counts = np.bincount((draws + (np.arange(b) * G)[:, None]).ravel(), minlength=b * G).reshape(b, G)
        counts = counts.astype(np.float64)
        tot_num, tot_den = counts @ num, counts @ den
        safe = np.where(tot_den != 0, tot_den, 1.0)
        out[s:s + b] = np.where(tot_den != 0, tot_num / safe, 0.0).sum(axis=1)
    return out


def bootstrap_interval(terms: RatioTerms, rng: np.random.Generator, *, n_boot: int = 500, alpha: float = 0.05,
                       groups: np.ndarray | None = None) -> Interval:
    """Two-sided (1 − alpha) percentile interval of an estimator by unit bootstrap."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    values = bootstrap_values(terms, rng, n_boot=n_boot, groups=groups)
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return Interval(float(lo), float(hi), float(values.std(ddof=1)))


@dataclass(frozen=True)
class LowerBound:
    """A (1 − δ) lower bound on the mean of nonnegative unit values."""

    lower_bound: float
    delta: float
    method: str
    clip: float | None
    """Truncation threshold c used (None for the t bound)."""
    n_bound: int
    """Units the bound was computed on (the rest chose c)."""
    mean: float
    """Plain mean of all unit values (the unbiased estimate the bound is about)."""


def empirical_bernstein_bound(y: np.ndarray, c: float, delta: float) -> float:
    """Thomas et al. (2015) Theorem 1 with c_i = c, for y already in [0, c]."""
    n = y.shape[0]
    if n < 2:
        return -np.inf
    log_term = np.log(2.0 / delta)
    return float(y.mean() - 7.0 * c * log_term / (3.0 * (n - 1)) - np.sqrt(2.0 * log_term * y.var(ddof=1) / n))


def _best_clip(x_tune: np.ndarray, n_post: int, delta: float) -> float:
    """Threshold maximising the bound predicted for ``n_post`` units from the tuning units."""
    candidates = np.unique(np.quantile(x_tune, np.linspace(0.5, 1.0, 51)))
    candidates = candidates[candidates > 0]
    if candidates.size == 0:
        return 1.0
    log_term = np.log(2.0 / delta)
    best, best_c = -np.inf, float(candidates[-1])
    for c in candidates:
        y = np.minimum(x_tune, c)
        pred = y.mean() - 7.0 * c * log_term / (3.0 * (n_post - 1)) - np.sqrt(2.0 * log_term * y.var(ddof=1) / n_post)
        if pred > best:
            best, best_c = pred, float(c)
    return best_c


def hcope_lower_bound(unit_values: np.ndarray, delta: float, rng: np.random.Generator, *,
                      method: str = "bernstein", clip: float | None = None,
                      tune_fraction: float = 0.2) -> LowerBound:
    """(1 − δ) lower bound on E[X] from independent nonnegative unit values X_i.

    Parameters
    ----------
    unit_values : (n,) independent, nonnegative, each unbiased for the quantity bounded
    delta : allowed failure probability in (0, 1)
    rng : used to split tuning units from bounding units
    method : ``"bernstein"`` (the guarantee, module docstring) or ``"t"`` (approximate)
    clip : fixed threshold c; None chooses it on ``tune_fraction`` of the units
    """
    x = np.asarray(unit_values, np.float64)
    if x.ndim != 1 or x.shape[0] < 2:
        raise ValueError(f"need a 1-D array of at least 2 unit values, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("unit values must be finite")
    if (x < 0).any():
        raise ValueError(f"unit values must be >= 0 (shift rewards by a lower bound first); min is {float(x.min())}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    n = x.shape[0]
    if method == "t":
        se = x.std(ddof=1) / np.sqrt(n)
        return LowerBound(float(x.mean() - stats.t.ppf(1 - delta, n - 1) * se), delta, "t", None, n, float(x.mean()))
    if method != "bernstein":
        raise ValueError(f"method must be 'bernstein' or 't', got {method!r}")
    if clip is not None:
        if clip <= 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        return LowerBound(empirical_bernstein_bound(np.minimum(x, clip), clip, delta), delta, method,
                          float(clip), n, float(x.mean()))
    if not 0 < tune_fraction < 1:
        raise ValueError(f"tune_fraction must be in (0, 1), got {tune_fraction}")
    order = rng.permutation(n)
    n_tune = min(max(2, int(round(tune_fraction * n))), n - 2)
    tune, post = x[order[:n_tune]], x[order[n_tune:]]
    c = _best_clip(tune, post.shape[0], delta)
    return LowerBound(empirical_bernstein_bound(np.minimum(post, c), c, delta), delta, method, c,
                      int(post.shape[0]), float(x.mean()))
