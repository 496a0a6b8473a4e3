"""Fast variates for drawing customers: tabulated inverse CDFs and counter-based exact gammas.

Drawing a customer (reset and autoreset) needs Gamma and Beta variates. scipy's exact inverse
CDFs (``gammaincinv``, ``betaincinv``) cost 0.3-1 µs each, which made a reset of 10**6 customers
take ~5 s. Two replacements, both keyed only by the uniforms or counters they are given, so
common random numbers are unchanged (a customer's draws depend on seed, customer, episode and
draw number only):

* :func:`gamma_quantile` / :func:`beta_quantile`: the inverse CDF of a distribution whose shape
  parameters are fixed by the scenario (the population's rate, drop-out and spend-rate
  heterogeneity, taste concentration, trust, online share), tabulated once per shape and
  interpolated. The table is a cubic Hermite spline with the exact derivative at each knot, in
  coordinates where the quantile is smooth and asymptotically linear in both tails: the knots
  are uniform in t = logit(u) over [-34, 34], which covers every 48-bit uniform of
  :func:`rapport.envs.noise.uniform64`, and the value is log Q (Gamma) or logit Q (Beta). The relative
  error in Q is below 1e-9 across that range (``tests/test_samplers.py`` checks against scipy);
  u outside the range falls back to scipy. Still a monotone transform of one uniform.
* :func:`gamma_exact` / :func:`beta_exact`: exact Gamma and Beta variates for shapes that vary
  per row (a history's spend over x + 1 purchases, the time of the last purchase), by
  Marsaglia-Tsang rejection with a counter per attempt, as the weekly spend draws do.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import special

from rapport.envs import noise

T_RANGE = 34.0
"""The tables cover logit(u) in [-T_RANGE, T_RANGE]: every uniform64 (u >= 2**-49) is inside."""
KNOTS = 1024
"""Intervals per table (33 KB of coefficients per distribution)."""
BLOCK = 1024
"""Stream ids one :func:`gamma_exact` call may use, from ``block * BLOCK`` on."""
_MAX_ATTEMPTS = (BLOCK - 4) // 4


class QuantileTable:
    """Tabulated inverse CDF of one fixed distribution (see the module docstring).

    ``kind`` is ``"gamma"`` (``params = (shape,)``, scale 1) or ``"beta"`` (``params = (a, b)``).
    Call it on an array of uniforms in (0, 1) to get float64 quantiles.
    """

    def __init__(self, kind: str, params: tuple[float, ...], knots: int = KNOTS) -> None:
        if kind not in ("gamma", "beta"):
            raise ValueError(f"kind must be 'gamma' or 'beta', got {kind!r}")
        need = 1 if kind == "gamma" else 2
        if len(params) != need or not all(math.isfinite(p) and p > 0 for p in params):
            raise ValueError(f"{kind} quantile table needs {need} finite shape parameter(s) > 0, "
                             f"got {params!r}")
        self.kind, self.params = kind, tuple(float(p) for p in params)
        self.t0, self.h = -T_RANGE, 2 * T_RANGE / knots
        t = np.linspace(-T_RANGE, T_RANGE, knots + 1)
        y, dy = (_gamma_knots if kind == "gamma" else _beta_knots)(t, *self.params)
        # Rare parameters (a shape far below 0.01) underflow a quantile to 0 within the range:
        # then every call is exact.
        self.exact = not (np.all(np.isfinite(y)) and np.all(np.isfinite(dy)))
        if self.exact:
            y, dy = np.zeros(knots + 1), np.zeros(knots + 1)  # unused
        hd = self.h * dy
        dyk = np.diff(y)
        self.c0 = y[:-1].copy()
        self.c1 = hd[:-1].copy()
        self.c2 = 3 * dyk - 2 * hd[:-1] - hd[1:]
        self.c3 = -2 * dyk + hd[:-1] + hd[1:]

    def __call__(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=np.float64)
        if self.exact:
            return self._scipy(u)
        t = np.log(u)
        t -= np.log1p(-u)
        t -= self.t0
        t *= 1.0 / self.h
        i = t.astype(np.intp)  # truncation = floor inside the range
        outside = (t < 0) | (i >= self.c0.size)
        if outside.any():
            np.clip(i, 0, self.c0.size - 1, out=i)
        t -= i  # position within the interval, [0, 1)
        y = self.c3[i]
        y *= t
        y += self.c2[i]
        y *= t
        y += self.c1[i]
        y *= t
        y += self.c0[i]
        if self.kind == "gamma":
            np.exp(y, out=y)
        else:
            special.expit(y, out=y)
        if outside.any():
            y[outside] = self._scipy(u[outside])
        return y

    def _scipy(self, u: np.ndarray) -> np.ndarray:
        if self.kind == "gamma":
            return special.gammaincinv(self.params[0], u)
        return special.betaincinv(*self.params, u)


def _gamma_knots(t: np.ndarray, shape: float) -> tuple[np.ndarray, np.ndarray]:
    """log Q and d log Q / d logit(u) of Gamma(shape) at u = expit(t), each tail computed from
    its own side so neither loses precision."""
    u, v = special.expit(t), special.expit(-t)  # u and 1 - u
    with np.errstate(divide="ignore", over="ignore"):
        q = np.where(t < 0, special.gammaincinv(shape, u), special.gammainccinv(shape, v))
        log_q = np.log(q)
        # dQ/du = 1/f(Q), du/dt = u(1 - u): d log Q/dt = u(1 - u)·Γ(shape) / (Q^shape e^(-Q))
        dy = np.exp(np.log(u) + np.log(v) + special.gammaln(shape) - shape * log_q + q)
    return log_q, dy


def _beta_knots(t: np.ndarray, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """logit Q and d logit Q / d logit(u) of Beta(a, b) at u = expit(t)."""
    u, v = special.expit(t), special.expit(-t)
    with np.errstate(divide="ignore", over="ignore"):
        lower = special.betaincinv(a, b, u)  # Q, accurate where Q is small
        upper = special.betaincinv(b, a, v)  # 1 - Q, accurate where Q is near 1
        log_q = np.where(t < 0, np.log(lower), np.log1p(-upper))
        log_1mq = np.where(t < 0, np.log1p(-lower), np.log(upper))
        # d logit Q/dt = u(1 - u)·B(a, b) / (Q^a (1 - Q)^b)
        dy = np.exp(np.log(u) + np.log(v) + special.betaln(a, b) - a * log_q - b * log_1mq)
    return log_q - log_1mq, dy


@lru_cache(maxsize=256)
def gamma_quantile(shape: float) -> QuantileTable:
    """Tabulated inverse CDF of Gamma(shape, scale 1), built once per shape."""
    return QuantileTable("gamma", (float(shape),))


@lru_cache(maxsize=256)
def beta_quantile(a: float, b: float) -> QuantileTable:
    """Tabulated inverse CDF of Beta(a, b), built once per (a, b)."""
    return QuantileTable("beta", (float(a), float(b)))


def gamma_exact(keys: np.ndarray, week: np.ndarray | int, mechanism: int, shape: np.ndarray,
                block: int = 0) -> np.ndarray:
    """Gamma(shape, scale 1) variates, exact for any shape > 0 (an array like ``keys``).

    Marsaglia-Tsang rejection for shape + 1 when shape < 1 (then times U^(1/shape)), else for
    shape. Attempt j of a row uses its stream ids ``block·BLOCK + 4j .. + 4j + 3`` of
    ``mechanism`` (a 48-bit uniform and a 24-bit uniform for a Box-Muller normal, a 24-bit one to
    accept); the shape < 1 factor uses ids ``block·BLOCK + BLOCK - 4, - 3``. So the variate
    depends only on the row's key, ``week``, ``mechanism`` and ``block``, never on other rows.
    """
    shape = np.asarray(shape, dtype=np.float64)
    if not np.all(shape > 0):  # also catches NaN
        raise ValueError("gamma_exact needs every shape > 0")
    keys = np.asarray(keys)
    if shape.shape != keys.shape:
        raise ValueError(f"shape must be an array like keys {keys.shape}, got {shape.shape}")
    base = int(block) * BLOCK
    small = shape < 1
    d = np.where(small, shape + 1.0, shape) - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    out = np.empty(shape.shape, dtype=np.float64)
    week_arr = np.asarray(week)
    todo = np.arange(shape.size)
    k, w, dd, cc = keys, week_arr, d, c
    for attempt in range(_MAX_ATTEMPTS):
        s = base + 4 * attempt
        u1 = noise.uniform64(k, w, mechanism, s // 2)
        z = noise.uniform(k, w, mechanism, s + 2).astype(np.float64)
        z *= 2.0 * np.pi
        np.cos(z, out=z)
        np.log(u1, out=u1)
        u1 *= -2.0
        np.sqrt(u1, out=u1)
        z *= u1  # standard normal (Box-Muller)
        v = cc * z
        v += 1.0
        v *= v * v
        log_u3 = np.log(noise.uniform(k, w, mechanism, s + 3).astype(np.float64))
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = (v > 0) & (log_u3 < 0.5 * z * z + dd - dd * v + dd * np.log(v))
        out[todo[ok]] = dd[ok] * v[ok]
        if ok.all():
            break
        todo, keep = todo[~ok], ~ok
        k, dd, cc = k[keep], dd[keep], cc[keep]
        w = w[keep] if week_arr.ndim else week_arr
    else:  # pragma: no cover - probability below 0.05**250
        raise RuntimeError("gamma_exact: rejection did not accept within its stream block")
    if small.any():
        idx = np.flatnonzero(small)
        wi = week_arr[idx] if week_arr.ndim else week_arr
        u = noise.uniform64(keys[idx], wi, mechanism, (base + BLOCK - 4) // 2)
        out[idx] *= u ** (1.0 / shape[idx])
    return out


def beta_exact(keys: np.ndarray, week: np.ndarray | int, mechanism: int, a: np.ndarray,
               b: np.ndarray, blocks: tuple[int, int] = (1, 2)) -> np.ndarray:
    """Beta(a, b) variates, exact, as G_a / (G_a + G_b) from two :func:`gamma_exact` draws in
    stream blocks ``blocks`` of ``mechanism``."""
    ga = gamma_exact(keys, week, mechanism, np.asarray(a, np.float64), blocks[0])
    gb = gamma_exact(keys, week, mechanism, np.asarray(b, np.float64), blocks[1])
    return ga / (ga + gb)


def poisson_quantile(mean: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Poisson(mean) variates by inverse CDF from uniforms ``u``: the smallest k with
    P(N <= k) >= u, as :func:`rapport.envs.noise.poisson_inverse`, found from a Cornish-Fisher guess
    instead of a walk from 0 (for the large means of a history drawn at reset).

    Rows with u <= P(0) are 0. The others start at k0 = ⌊mean + z·√mean + (z² − 1)/6⌋ with
    z = Φ⁻¹(u), take P(N <= k0) exactly (``scipy.special.pdtr``, or the upper tail ``pdtrc`` above the
    median), then walk down or up by the pmf, usually for a step or two. It agrees with the walk
    from 0 except where rounding of the two CDF sums differs at a boundary, and in the far upper
    tail (u within ~1e-13 of 1), where the walk from 0 stalls and overshoots.
    """
    mean = np.asarray(mean, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    if mean.shape != u.shape:
        raise ValueError(f"mean and u must have one shape, got {mean.shape} and {u.shape}")
    if not np.all(mean >= 0):
        raise ValueError("poisson_quantile needs every mean >= 0 (and not NaN)")
    count = np.zeros(mean.shape, np.int64)
    rows = np.flatnonzero(u > np.exp(-mean))
    if rows.size == 0:
        return count
    m, ur = mean[rows], u[rows]
    z = special.ndtri(ur)
    k = np.floor(m + z * np.sqrt(m) + (z * z - 1.0) / 6.0)
    np.maximum(k, 0.0, out=k)
    # Above the median the CDF is carried as −P(N > k) against −(1 − u): sums near 1 would
    # stall by rounding in the far upper tail, tail probabilities do not. The updates are the same.
    upper = ur > 0.5
    cdf = np.where(upper, -special.pdtrc(k, m), special.pdtr(k, m))
    ur = np.where(upper, -(1.0 - ur), ur)
    with np.errstate(divide="ignore"):
        log_m = np.log(m)
    # down: while P(N <= k - 1) = cdf - pmf(k) still covers u, step down
    act = np.flatnonzero((cdf >= ur) & (k > 0))
    while act.size:
        ka = k[act]
        below = cdf[act] - np.exp(ka * log_m[act] - m[act] - special.gammaln(ka + 1.0))
        step = below >= ur[act]
        act = act[step]
        k[act] -= 1.0
        cdf[act] = below[step]
        act = act[k[act] > 0]
    # up: while P(N <= k) < u, add pmf(k + 1)
    act = np.flatnonzero(cdf < ur)
    while act.size:
        ka = k[act] + 1.0
        pk = np.exp(ka * log_m[act] - m[act] - special.gammaln(ka + 1.0))
        cdf[act] += pk
        k[act] = ka
        act = act[(cdf[act] < ur[act]) & (pk > 1e-300)]
    count[rows] = k.astype(np.int64)
    return count
