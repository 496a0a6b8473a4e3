"""Counter-based random numbers: common random numbers for a whole population.

A customer's randomness depends only on (seed, customer index, episode, week, mechanism, draw):
each uniform is a hash of those integers, so

* the same seed gives bit-identical trajectories;
* changing one customer's actions changes no other customer's draws;
* customer ``i`` gets the same draws whether the population has 10 or 10**6 rows, or is split into
  shards, and the single-customer env with index ``i`` sees exactly row ``i``'s draws;
* draws can be made for any subset of rows (e.g. the ~3 % who purchase) without generating the rest.

The hash is two rounds of a 32-bit integer finaliser ("lowbias32", Wellons), which numpy
vectorises well (~4 ms per million uniforms on this machine, where 64-bit multiplies are ~3x
slower). Variates come from uniforms by inverse transforms, or by rejection with a counter per
attempt, so a row's draw never depends on other rows.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
from scipy import special

_U32 = np.uint32
_GOLDEN = 0x9E3779B9
_MASK32 = 0xFFFFFFFF


class Mechanism(IntEnum):
    """Independent random streams, one per modelled mechanism (never reuse a number)."""

    INIT_TENURE = 1
    INIT_RATE = 2
    INIT_DROPOUT = 3
    INIT_SPEND_RATE = 4
    INIT_HISTORY_COUNT = 5
    INIT_HISTORY_DEATH = 6
    INIT_HISTORY_LAST = 7
    INIT_HISTORY_SPEND = 8
    INIT_MEDIA_RESPONSE = 9
    INIT_CATEGORY = 10  # + category index (up to 16)
    INIT_RESPONSE = 30  # + channel index
    INIT_OPTIN = 40  # + channel index
    PURCHASE = 100
    DROPOUT = 101
    PURCHASE_TIME = 102
    SPEND = 103  # Marsaglia-Tsang: draw = 3*attempt + {0, 1, 2}
    ANNOYANCE = 104
    OPTOUT = 110
    # issue 3 mechanisms (reset)
    INIT_PROSPECT = 50
    INIT_DRIFT_RATE = 51
    INIT_DRIFT_PREF = 52  # draw = category
    INIT_TRUST = 53
    INIT_BELIEF = 54  # draw 0: right or wrong, 1: which wrong category
    INIT_ONLINE_SHARE = 55
    INIT_ONLINE_COUNT = 56
    INIT_ONLINE_LAST = 57  # draw 0: position of the last online purchase, 1: its time
    INIT_ONLINE_SPEND = 58
    INIT_CREATIVE_TASTE = 59  # Box-Muller pairs: draws 2j, 2j+1 (issue 15)
    # issue 3 mechanisms (weekly)
    PROSPECT_CONVERT = 120
    PROSPECT_SPEND = 121  # Marsaglia-Tsang draws
    DRIFT = 122  # Box-Muller pairs: draws 2j, 2j+1
    LIFE_EVENT = 123
    LIFE_EVENT_PREF = 124  # draw = category
    LIFE_EVENT_DRIFT = 125  # draw 0: rate, 1 + k: taste of category k
    BELIEF = 126  # draw 0: right or wrong, 1: which wrong category
    ONLINE_SPLIT = 127
    SPEND_OFFLINE = 128  # Marsaglia-Tsang draws
    ONLINE_TIME = 129
    CHURN_WEEKLY = 130
    REMINDER = 131


def _lowbias32(x: np.ndarray) -> np.ndarray:
    """In-place 32-bit avalanche finaliser on a uint32 array."""
    t = np.right_shift(x, _U32(16))  # one scratch array for the three shifts
    x ^= t
    x *= _U32(0x7FEB352D)
    np.right_shift(x, _U32(15), out=t)
    x ^= t
    x *= _U32(0x846CA68B)
    np.right_shift(x, _U32(16), out=t)
    x ^= t
    return x


def _mix_scalar(x: int) -> int:
    x &= _MASK32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _MASK32
    x ^= x >> 16
    return x


def seed_key(seed: int) -> int:
    """Fold an arbitrary non-negative integer seed into a 32-bit key."""
    if not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    key = 0x5EED
    s = int(seed)
    while True:  # fold 32 bits at a time so seeds above 2**32 still differ
        key = _mix_scalar(key ^ (s & _MASK32) ^ _GOLDEN)
        s >>= 32
        if s == 0:
            return key


def row_keys(seed: int, customer_ids: np.ndarray, episodes: np.ndarray) -> np.ndarray:
    """Per-row 32-bit keys from (seed, customer index, episode); shape of ``customer_ids``."""
    k = seed_key(seed)
    ids = np.asarray(customer_ids, dtype=np.uint64)
    lo = (ids & np.uint64(_MASK32)).astype(_U32)
    hi = (ids >> np.uint64(32)).astype(_U32)
    x = lo ^ _U32(k)
    _lowbias32(x)
    x += hi * _U32(0x85EBCA6B)
    x ^= np.asarray(episodes, dtype=_U32) * _U32(0xC2B2AE35)
    _lowbias32(x)
    return x


def _hash(keys: np.ndarray, week: np.ndarray | int, stream: int) -> np.ndarray:
    """uint32 hash of (row key, week, stream); ``week`` is a scalar or an array like ``keys``."""
    stream_key = _mix_scalar(stream * _GOLDEN + 0x68E31DA4)
    if np.ndim(week) == 0:
        x = np.bitwise_xor(keys, _U32((int(week) * 0x27D4EB2F + stream_key) & _MASK32), dtype=_U32)
    else:  # uint32 array arithmetic wraps modulo 2**32, which is what we want
        x = np.asarray(week, dtype=_U32) * _U32(0x27D4EB2F)
        x += _U32(stream_key)
        x ^= keys
    _lowbias32(x)
    x += keys
    return _lowbias32(x)


def stream_id(mechanism: int, draw: int = 0) -> int:
    """Combine a mechanism and a draw number (several draws per mechanism) into one stream id."""
    return int(mechanism) * 4096 + int(draw)


def uniform(keys: np.ndarray, week: np.ndarray | int, mechanism: int, draw: int = 0) -> np.ndarray:
    """float32 uniforms in (0, 1), 24-bit resolution, one per key."""
    h = _hash(keys, week, stream_id(mechanism, draw))
    u = (h >> _U32(8)).astype(np.float32)
    u += np.float32(0.5)
    u *= np.float32(2.0**-24)
    return u


def uniform64(keys: np.ndarray, week: np.ndarray | int, mechanism: int, draw: int = 0) -> np.ndarray:
    """float64 uniforms in (0, 1) with 48-bit resolution (for inverse transforms at reset)."""
    hi = _hash(keys, week, stream_id(mechanism, 2 * draw)) >> _U32(8)
    lo = _hash(keys, week, stream_id(mechanism, 2 * draw + 1)) >> _U32(8)
    return (hi.astype(np.float64) * 2.0**24 + lo.astype(np.float64) + 0.5) * 2.0**-48


def normal(keys: np.ndarray, week: np.ndarray | int, mechanism: int, draw: int = 0) -> np.ndarray:
    """Standard normal variates (float64) by inverse transform."""
    return special.ndtri(uniform64(keys, week, mechanism, draw))


def normal_pair(keys: np.ndarray, week: np.ndarray | int, mechanism: int,
                pair: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two independent float32 standard normals per key by Box-Muller (draws 2·pair, 2·pair + 1).

    About 5x cheaper than :func:`normal` (an inverse CDF in float64), for weekly draws over the
    whole population; 24-bit uniforms truncate the tails at ~5.8 SD.
    """
    u1 = uniform(keys, week, mechanism, 2 * pair)
    u2 = uniform(keys, week, mechanism, 2 * pair + 1)
    np.log(u1, out=u1)
    u1 *= np.float32(-2.0)
    np.sqrt(u1, out=u1)
    u2 *= np.float32(2.0 * np.pi)
    z1 = np.sin(u2)
    np.cos(u2, out=u2)
    u2 *= u1
    z1 *= u1
    return u2, z1


def binomial_inverse(n: np.ndarray, p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Binomial(n, p) variates by sequential inverse CDF from uniforms ``u`` (rows still searching
    only; for the small counts of purchases in a week or a customer's history)."""
    n = np.asarray(n, dtype=np.int64)
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    u = np.asarray(u, dtype=np.float64)
    count = np.zeros(n.shape, np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pk = np.exp(n * np.log1p(-p))  # P(0); 0**0 = 1 for n = 0
        ratio = p / (1.0 - p)
    pk = np.where(p >= 1.0, np.where(n == 0, 1.0, 0.0), pk)
    cdf = pk.copy()
    count[p >= 1.0] = n[p >= 1.0]
    active = np.flatnonzero((u > cdf) & (p < 1.0) & (n > 0))
    while active.size:
        k = count[active]
        pk_a = pk[active] * ratio[active] * (n[active] - k) / (k + 1)
        pk[active] = pk_a
        cdf_a = cdf[active] + pk_a
        cdf[active] = cdf_a
        count[active] = k + 1
        still = (u[active] > cdf_a) & (count[active] < n[active]) & (pk_a > 1e-300)
        active = active[still]
    return count


def gamma_inverse(shape: np.ndarray | float, u: np.ndarray) -> np.ndarray:
    """Gamma(shape, scale 1) variates from uniforms by the exact inverse CDF (slow; reset only)."""
    return special.gammaincinv(shape, u)


def poisson_inverse(mean: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Poisson variates by sequential inverse CDF, iterating only over rows still searching.

    Exact for any mean; cheap when means are small (a weekly purchase rate is ~0.05), and large
    means (history draws at reset) cost a few dozen passes over a shrinking set of rows.
    """
    mean = np.asarray(mean, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    # Start far-tail-safe: large means begin the search 12 SD below the mean, with the CDF and
    # pmf there computed directly (exp(-mean) would underflow above ~745).
    start = np.where(mean > 50, np.floor(np.maximum(mean - 12 * np.sqrt(mean), 0)), 0)
    count = start.astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_pk = np.where(start > 0, start * np.log(mean) - special.gammaln(start + 1), 0.0)
    pk = np.exp(log_pk - mean)
    cdf = np.where(start > 0, special.pdtr(start, mean), pk)
    active = np.flatnonzero(u > cdf)
    while active.size:
        k = count[active] + 1
        pk_a = pk[active] * mean[active] / k
        pk[active] = pk_a
        cdf_a = cdf[active] + pk_a
        cdf[active] = cdf_a
        count[active] = k
        # the CDF can stall below u by rounding in the far tail; stop once mass is exhausted
        still = (u[active] > cdf_a) & (pk_a > 1e-300)
        active = active[still]
    return count


def gamma_marsaglia(keys: np.ndarray, week: np.ndarray | int, mechanism: int,
                    shape: np.ndarray) -> np.ndarray:
    """Gamma(shape ≥ 1, scale 1) variates by Marsaglia-Tsang rejection, counter per attempt.

    Each attempt uses three uniforms (two for a Box-Muller normal, one to accept) from draw
    numbers 3*attempt..3*attempt+2, so a row's value depends only on its own key. Acceptance is
    above 95 % for shape ≥ 1; rows still rejected after an attempt try again with new draws.
    """
    shape = np.asarray(shape, dtype=np.float64)
    if np.any(shape < 1):
        raise ValueError("gamma_marsaglia needs shape >= 1")
    d = shape - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    out = np.empty(shape.shape, dtype=np.float64)
    todo = np.arange(shape.size)
    week_arr = np.asarray(week)
    attempt = 0
    while todo.size:
        k = keys[todo]
        w = week_arr[todo] if week_arr.ndim else week_arr
        u1 = uniform64(k, w, mechanism, 3 * attempt)
        u2 = uniform(k, w, mechanism, 3 * attempt + 1).astype(np.float64)
        u3 = uniform(k, w, mechanism, 3 * attempt + 2).astype(np.float64)
        z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
        v = (1.0 + c[todo] * z) ** 3
        with np.errstate(invalid="ignore", divide="ignore"):
            ok = (v > 0) & (np.log(u3) < 0.5 * z * z + d[todo] - d[todo] * v + d[todo] * np.log(v))
        out[todo[ok]] = d[todo[ok]] * v[ok]
        todo = todo[~ok]
        attempt += 1
        if attempt > 1000:  # pragma: no cover - probability ~0
            raise RuntimeError("gamma_marsaglia failed to converge")
    return out
