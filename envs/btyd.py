"""BG/NBD and Gamma-Gamma customer-base models: likelihoods, MLE fits and closed forms.

The BG/NBD model (Fader, Hardie & Lee 2005a) describes repeat buying in a non-contractual
setting: while alive a customer buys as a Poisson process with rate ``lambda ~ Gamma(r, alpha)``
(shape ``r``, rate ``alpha``) and dies right after each repeat purchase with probability
``p ~ Beta(a, b)``. The Gamma-Gamma model (Colombo & Jiang 1999; Fader, Hardie & Lee 2005b)
describes the value of those transactions: ``z ~ Gamma(p, nu)`` with ``nu ~ Gamma(q, gamma)``.

Per-customer data follow the usual RFM summary convention:

``x``
    number of repeat transactions in the calibration period, shape ``(n,)``;
``t_x``
    time of the last repeat transaction, measured from the first purchase (0 when ``x = 0``);
``T``
    length of the observation window, measured from the first purchase.

All times share one unit (weeks in this project). Everything is vectorised numpy/scipy; the
package must not depend on ``lifetimes`` at run time.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

__all__ = [
    "BGNBDFit",
    "GammaGammaFit",
    "bgnbd_conditional_expected",
    "bgnbd_expected_purchases",
    "bgnbd_log_likelihood",
    "bgnbd_p_alive",
    "bgnbd_prob_no_purchase",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_expected_spend",
]

_BGNBD_NAMES = ("r", "alpha", "a", "b")
_GG_NAMES = ("p", "q", "gamma")
# Log-parameter box: wide enough for any realistic time unit (days to years), narrow enough
# that exp() never overflows while L-BFGS-B probes far-away points.
_LOG_BOUND = 20.0


@dataclass(frozen=True)
class BGNBDFit:
    """Maximum-likelihood BG/NBD estimate.

    Attributes
    ----------
    r, alpha : float
        Shape and rate of the Gamma distribution of purchase rates.
    a, b : float
        Parameters of the Beta distribution of the drop-out probability.
    log_likelihood : float
        Total log-likelihood at the estimate (summed over customers).
    n_customers : int
        Number of customers used in the fit.
    """

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n_customers: int

    @property
    def params(self) -> tuple[float, float, float, float]:
        """``(r, alpha, a, b)``, the order every BG/NBD function in this module expects."""
        return (self.r, self.alpha, self.a, self.b)


@dataclass(frozen=True)
class GammaGammaFit:
    """Maximum-likelihood Gamma-Gamma estimate.

    Attributes
    ----------
    p : float
        Shape of the per-transaction spend distribution.
    q, gamma : float
        Shape and rate of the Gamma distribution of the per-customer spend rate ``nu``.
    log_likelihood : float
        Total log-likelihood at the estimate (summed over repeat customers).
    n_customers : int
        Number of customers with ``frequency > 0`` used in the fit.
    """

    p: float
    q: float
    gamma: float
    log_likelihood: float
    n_customers: int

    @property
    def params(self) -> tuple[float, float, float]:
        """``(p, q, gamma)``, the order :func:`gamma_gamma_expected_spend` expects."""
        return (self.p, self.q, self.gamma)


BGNBDParams = Sequence[float] | BGNBDFit
GammaGammaParams = Sequence[float] | GammaGammaFit


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def _params(params: object, names: tuple[str, ...]) -> tuple[float, ...]:
    """Unpack and check a parameter vector; accepts a fit object or a plain sequence."""
    values = getattr(params, "params", params)
    try:
        values = tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"params must be a sequence of numbers {names}, got {params!r}") from exc
    if len(values) != len(names):
        raise ValueError(f"params must have {len(names)} entries {names}, got {len(values)}")
    for name, value in zip(names, values, strict=True):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"parameter {name} must be finite and > 0, got {value}")
    return values


def _array(name: str, values: object) -> np.ndarray:
    """Convert to a float array of at most one dimension with only finite entries."""
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {values!r}") from exc
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D array, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(np.atleast_1d(arr)))
    if bad.size:
        raise ValueError(
            f"{name} must be finite; found {np.atleast_1d(arr)[bad[0]]} at index {bad[0]}"
        )
    return arr


def _same_length(**arrays: np.ndarray) -> list[np.ndarray]:
    """Broadcast scalars against 1-D arrays, which must all have the same length."""
    lengths = {name: arr.size for name, arr in arrays.items() if arr.ndim == 1}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"arrays must have equal length, got lengths {lengths}")
    n = next(iter(lengths.values()), 1)
    return [np.broadcast_to(arr, (n,)).astype(float) for arr in arrays.values()]


def _first_violation(mask: np.ndarray) -> int | None:
    bad = np.flatnonzero(mask)
    return int(bad[0]) if bad.size else None


def _rfm(x: object, t_x: object, T: object, **extra: object) -> list[np.ndarray]:
    """Validate the (x, t_x, T) summary: equal length, finite, x >= 0, 0 <= t_x <= T.

    ``extra`` arrays (e.g. a forecast horizon) take part in the length check and broadcasting
    and are returned after ``x, t_x, T``.
    """
    named = {"x": x, "t_x": t_x, "T": T, **extra}
    arrays = _same_length(**{name: _array(name, value) for name, value in named.items()})
    xs, txs, Ts = arrays[:3]
    i = _first_violation(xs < 0)
    if i is not None:
        raise ValueError(f"x must be >= 0 (repeat transactions); got x={xs[i]} at index {i}")
    i = _first_violation((txs < 0) | (txs > Ts))
    if i is not None:
        raise ValueError(
            f"t_x must satisfy 0 <= t_x <= T; got t_x={txs[i]}, T={Ts[i]} at index {i}"
        )
    return arrays


def _nonnegative(name: str, values: object) -> np.ndarray:
    arr = _array(name, values)
    i = _first_violation(np.atleast_1d(arr) < 0)
    if i is not None:
        raise ValueError(f"{name} must be >= 0; got {np.atleast_1d(arr)[i]} at index {i}")
    return arr


# --------------------------------------------------------------------------------------------
# BG/NBD likelihood
# --------------------------------------------------------------------------------------------


def _bgnbd_terms(
    log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Pieces shared by the log-likelihood and its gradient.

    ``L = A * [ (alpha+T)^-(r+x) + 1[x>0] * a/(b+x-1) * (alpha+t_x)^-(r+x) ]`` with
    ``log A = log Gamma(r+x) - log Gamma(r) + r log alpha + log B(a, b+x) - log B(a, b)``.
    Working with ``B(a, b+x) * a/(b+x-1)`` instead of ``B(a+1, b+x-1)`` keeps the x = 0 rows
    free of ``B(a+1, b-1)``, which is undefined for b < 1.
    """
    r, alpha, a, b = np.exp(log_params)
    log_a = (
        special.gammaln(r + x)
        - special.gammaln(r)
        + r * np.log(alpha)
        + special.betaln(a, b + x)
        - special.betaln(a, b)
    )
    log_term_T = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    # b + x - 1 > 0 on the repeat rows; the dummy 1.0 keeps log() quiet on the others.
    denom = np.where(repeat, b + x - 1.0, 1.0)
    log_term_tx = np.where(
        repeat, np.log(a) - np.log(denom) - (r + x) * np.log(alpha + t_x), -np.inf
    )
    return log_a, log_term_T, log_term_tx, denom, repeat


def _bgnbd_loglik(log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray):
    log_a, log_term_T, log_term_tx, _, _ = _bgnbd_terms(log_params, x, t_x, T)
    return log_a + np.logaddexp(log_term_T, log_term_tx)


def _bgnbd_objective(
    log_params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood and its gradient with respect to the log-parameters.

    The mean (not the sum) keeps L-BFGS-B's tolerances independent of the sample size.
    """
    r, alpha, a, b = np.exp(log_params)
    log_a, log_term_T, log_term_tx, denom, repeat = _bgnbd_terms(log_params, x, t_x, T)
    mix = np.logaddexp(log_term_T, log_term_tx)
    w_T, w_tx = np.exp(log_term_T - mix), np.exp(log_term_tx - mix)
    psi = special.digamma
    d_r = psi(r + x) - psi(r) + np.log(alpha) - w_T * np.log(alpha + T) - w_tx * np.log(alpha + t_x)
    d_alpha = r / alpha - (r + x) * (w_T / (alpha + T) + w_tx / (alpha + t_x))
    d_a = psi(a + b) - psi(a + b + x) + w_tx / a
    d_b = psi(b + x) - psi(b) + psi(a + b) - psi(a + b + x) - np.where(repeat, w_tx / denom, 0.0)
    grad = np.array([d_r.mean(), d_alpha.mean(), d_a.mean(), d_b.mean()]) * np.array(
        [r, alpha, a, b]
    )
    return -float(np.mean(log_a + mix)), -grad


def bgnbd_log_likelihood(params: BGNBDParams, x: object, t_x: object, T: object) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood.

    Parameters
    ----------
    params : sequence of 4 floats or BGNBDFit
        ``(r, alpha, a, b)``, all > 0.
    x, t_x, T : array_like, shape (n,) or scalar
        Repeat transactions, recency and age of each customer (``0 <= t_x <= T``).

    Returns
    -------
    numpy.ndarray, shape (n,)
        ``log L(r, alpha, a, b | x_i, t_x_i, T_i)`` for each customer.
    """
    log_params = np.log(_params(params, _BGNBD_NAMES))
    return _bgnbd_loglik(log_params, *_rfm(x, t_x, T))


def _bgnbd_start(x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Starting point with r = 1 and alpha matched to the observed mean rate."""
    rate = max(x.mean(), 0.1) / max(T.mean(), 1e-3)
    return np.log([1.0, 1.0 / rate, 1.0, 1.0])


def _minimise(
    objective: Callable[[np.ndarray], tuple[float, np.ndarray]], start: np.ndarray, what: str
) -> np.ndarray:
    """L-BFGS-B on log-parameters with an analytic gradient; warns when it did not converge."""
    res = optimize.minimize(
        objective,
        start,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-_LOG_BOUND, _LOG_BOUND)] * start.size,
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-9},
    )
    _, grad = objective(res.x)
    # L-BFGS-B often stops with ABNORMAL_TERMINATION_IN_LNSRCH once the objective is flat to
    # machine precision, so judge convergence by the gradient rather than by res.success.
    if not np.all(np.isfinite(res.x)) or np.max(np.abs(grad)) > 1e-5:
        warnings.warn(
            f"{what} fit may not have converged: {res.message}", RuntimeWarning, stacklevel=3
        )
    if np.any(np.abs(res.x) >= _LOG_BOUND - 1e-6):
        warnings.warn(
            f"{what} estimate hit the parameter bound exp(+-{_LOG_BOUND}); "
            "the model is probably not identified on these data",
            RuntimeWarning,
            stacklevel=3,
        )
    return res.x


def fit_bgnbd(x: object, t_x: object, T: object) -> BGNBDFit:
    """Fit the BG/NBD model by maximum likelihood.

    Parameters
    ----------
    x, t_x, T : array_like, shape (n,)
        Repeat transactions, recency and age of each customer (``0 <= t_x <= T``), n >= 1.

    Returns
    -------
    BGNBDFit
        Estimates of ``(r, alpha, a, b)`` and the total log-likelihood.

    Notes
    -----
    Optimises the mean log-likelihood over log-parameters with L-BFGS-B and an analytic
    gradient. On the CDNOW sample this reproduces Fader, Hardie & Lee (2005a).
    """
    xs, txs, Ts = _rfm(x, t_x, T)
    if xs.size == 0:
        raise ValueError("x, t_x, T must contain at least one customer")
    if not np.any(xs > 0):
        # With no repeat purchase the likelihood keeps rising as r -> 0: no finite MLE exists.
        raise ValueError("x must be > 0 for at least one customer to fit BG/NBD")
    log_params = _minimise(
        lambda lp: _bgnbd_objective(lp, xs, txs, Ts), _bgnbd_start(xs, Ts), "BG/NBD"
    )
    r, alpha, a, b = (float(v) for v in np.exp(log_params))
    ll = float(np.sum(_bgnbd_loglik(log_params, xs, txs, Ts)))
    return BGNBDFit(r=r, alpha=alpha, a=a, b=b, log_likelihood=ll, n_customers=int(xs.size))


# --------------------------------------------------------------------------------------------
# BG/NBD closed forms
# --------------------------------------------------------------------------------------------


def _require_a_not_one(a: float) -> None:
    # (a+b-1)/(a-1) is a removable singularity the closed forms cannot evaluate directly.
    if a == 1.0:
        raise ValueError("parameter a must differ from 1 for the BG/NBD closed forms")


def bgnbd_expected_purchases(params: BGNBDParams, t: object) -> np.ndarray:
    """Expected number of repeat purchases ``E[X(t)]`` of a customer born at time 0.

    Parameters
    ----------
    params : sequence of 4 floats or BGNBDFit
        ``(r, alpha, a, b)``, all > 0 and ``a != 1``.
    t : array_like, shape (m,) or scalar
        Time since the first purchase, >= 0.

    Returns
    -------
    numpy.ndarray, shape (m,) or ()
        ``(a+b-1)/(a-1) * [1 - (alpha/(alpha+t))^r * 2F1(r, b; a+b-1; t/(alpha+t))]``.
    """
    r, alpha, a, b = _params(params, _BGNBD_NAMES)
    _require_a_not_one(a)
    t = _nonnegative("t", t)
    hyp = special.hyp2f1(r, b, a + b - 1.0, t / (alpha + t))
    return (a + b - 1.0) / (a - 1.0) * (1.0 - (alpha / (alpha + t)) ** r * hyp)


def bgnbd_prob_no_purchase(params: BGNBDParams, t: object) -> np.ndarray:
    """Probability ``P(X(t) = 0) = (alpha/(alpha+t))^r`` of no repeat purchase by time t.

    Parameters
    ----------
    params : sequence of 4 floats or BGNBDFit
        ``(r, alpha, a, b)``, all > 0.
    t : array_like, shape (m,) or scalar
        Time since the first purchase, >= 0.

    Returns
    -------
    numpy.ndarray, shape (m,) or ()
    """
    r, alpha, _, _ = _params(params, _BGNBD_NAMES)
    t = _nonnegative("t", t)
    return np.exp(r * (np.log(alpha) - np.log(alpha + t)))


def _log_death_odds(params: tuple[float, ...], x, t_x, T) -> np.ndarray:
    """``log[a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x)]`` on repeaters, -inf otherwise."""
    r, alpha, a, b = params
    repeat = x > 0
    denom = np.where(repeat, b + x - 1.0, 1.0)
    log_odds = np.log(a) - np.log(denom) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return np.where(repeat, log_odds, -np.inf)


def bgnbd_p_alive(params: BGNBDParams, x: object, t_x: object, T: object) -> np.ndarray:
    """Probability that each customer is still alive at time T.

    Parameters
    ----------
    params : sequence of 4 floats or BGNBDFit
        ``(r, alpha, a, b)``, all > 0.
    x, t_x, T : array_like, shape (n,) or scalar
        Repeat transactions, recency and age of each customer.

    Returns
    -------
    numpy.ndarray, shape (n,)
        ``1 / (1 + 1[x>0] * a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x))``; exactly 1 when x = 0,
        because BG/NBD customers can only die right after a repeat purchase.
    """
    theta = _params(params, _BGNBD_NAMES)
    # expit(-z) = 1/(1+e^z) without overflow for customers long silent after many purchases.
    return special.expit(-_log_death_odds(theta, *_rfm(x, t_x, T)))


def bgnbd_conditional_expected(
    params: BGNBDParams, t: object, x: object, t_x: object, T: object
) -> np.ndarray:
    """Expected repeat purchases in ``(T, T+t]`` given the history, ``E[Y(t) | x, t_x, T]``.

    Parameters
    ----------
    params : sequence of 4 floats or BGNBDFit
        ``(r, alpha, a, b)``, all > 0 and ``a != 1``.
    t : array_like, shape (n,) or scalar
        Length of the forecast window, >= 0.
    x, t_x, T : array_like, shape (n,) or scalar
        Repeat transactions, recency and age of each customer.

    Returns
    -------
    numpy.ndarray, shape (n,)
    """
    theta = _params(params, _BGNBD_NAMES)
    r, alpha, a, b = theta
    _require_a_not_one(a)
    _nonnegative("t", t)
    xs, txs, Ts, t_arr = _rfm(x, t_x, T, t=t)
    z = t_arr / (alpha + Ts + t_arr)
    hyp = special.hyp2f1(r + xs, b + xs, a + b + xs - 1.0, z)
    shrink = np.exp((r + xs) * (np.log(alpha + Ts) - np.log(alpha + Ts + t_arr)))
    alive_part = (a + b + xs - 1.0) / (a - 1.0) * (1.0 - shrink * hyp)
    return alive_part * special.expit(-_log_death_odds(theta, xs, txs, Ts))


# --------------------------------------------------------------------------------------------
# Gamma-Gamma
# --------------------------------------------------------------------------------------------


def _gg_objective(log_params: np.ndarray, x: np.ndarray, m: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean negative Gamma-Gamma log-likelihood of the mean spends and its log-gradient.

    The mean of x spends is ``Gamma(p x, nu x)``; integrating ``nu ~ Gamma(q, gamma)`` out gives
    ``log L = lnG(px+q) - lnG(px) - lnG(q) + q ln g + px ln x + (px-1) ln m - (px+q) ln(g + x m)``.
    """
    p, q, g = np.exp(log_params)
    px = p * x
    log_g_xm = np.log(g + x * m)
    ll = (
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(g)
        + px * np.log(x)
        + (px - 1.0) * np.log(m)
        - (px + q) * log_g_xm
    )
    psi_sum = special.digamma(px + q)
    d_p = x * (psi_sum - special.digamma(px) + np.log(x) + np.log(m) - log_g_xm)
    d_q = psi_sum - special.digamma(q) + np.log(g) - log_g_xm
    d_g = q / g - (px + q) / (g + x * m)
    grad = np.array([d_p.mean(), d_q.mean(), d_g.mean()]) * np.array([p, q, g])
    return -float(ll.mean()), -grad


def _gg_start(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Moment-style start: q = 3 and p*gamma/(q-1) equal to the average spend."""
    p, q = 2.0, 3.0
    return np.log([p, q, np.average(m, weights=x) * (q - 1.0) / p])


def fit_gamma_gamma(frequency: object, monetary_value: object) -> GammaGammaFit:
    """Fit the Gamma-Gamma spend model by maximum likelihood.

    Parameters
    ----------
    frequency : array_like, shape (n,)
        Number of repeat transactions per customer (``x``), >= 0.
    monetary_value : array_like, shape (n,)
        Mean value of those repeat transactions; must be > 0 where ``frequency > 0``.

    Returns
    -------
    GammaGammaFit
        Estimates of ``(p, q, gamma)`` from the customers with ``frequency > 0``.
    """
    x, m = _same_length(
        frequency=_nonnegative("frequency", frequency),
        monetary_value=_nonnegative("monetary_value", monetary_value),
    )
    keep = x > 0
    i = _first_violation(keep & (m <= 0))
    if i is not None:
        raise ValueError(
            f"monetary_value must be > 0 where frequency > 0 (Gamma spends are positive); "
            f"got {m[i]} at index {i}"
        )
    if not np.any(keep):
        raise ValueError("frequency must be > 0 for at least one customer")
    x, m = x[keep], m[keep]
    log_params = _minimise(lambda lp: _gg_objective(lp, x, m), _gg_start(x, m), "Gamma-Gamma")
    p, q, g = (float(v) for v in np.exp(log_params))
    ll = -_gg_objective(log_params, x, m)[0] * x.size
    return GammaGammaFit(p=p, q=q, gamma=g, log_likelihood=ll, n_customers=int(x.size))


def gamma_gamma_expected_spend(
    params: GammaGammaParams, x: object, mean_spend: object
) -> np.ndarray:
    """Posterior expected spend per transaction, ``E[Z | x, mean_spend]``.

    Parameters
    ----------
    params : sequence of 3 floats or GammaGammaFit
        ``(p, q, gamma)``, all > 0; ``q > 1`` is needed whenever some ``x = 0``.
    x : array_like, shape (n,) or scalar
        Number of repeat transactions, >= 0.
    mean_spend : array_like, shape (n,) or scalar
        Mean value of those transactions, >= 0 (ignored where x = 0).

    Returns
    -------
    numpy.ndarray, shape (n,)
        ``p (gamma + x m) / (p x + q - 1)``: a weighted average of the population mean
        ``p gamma / (q - 1)`` and the customer's own mean ``m``.
    """
    p, q, g = _params(params, _GG_NAMES)
    x, m = _same_length(x=_nonnegative("x", x), mean_spend=_nonnegative("mean_spend", mean_spend))
    if q <= 1.0 and np.any(x == 0):
        raise ValueError(
            f"parameter q must be > 1 when some x = 0 (the population mean spend "
            f"p*gamma/(q-1) is infinite otherwise); got q={q}"
        )
    return p * (g + x * m) / (p * x + q - 1.0)
