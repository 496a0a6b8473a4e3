"""Calibration on the full CDNOW cohort (tests/data/cdnow_master.csv, 23,570 customers).

The full cohort is a real log with what the issue lists: $0 orders, exact duplicate rows and
a customer whose only calibration repeat purchase was $0, which made the Gamma-Gamma fit fail
before. No BG/NBD or Gamma-Gamma estimates for the *full* cohort are published (see
tests/data/README.md); the published ones are for its 1/10 systematic sample (Fader, Hardie &
Lee 2005a; Fader & Hardie 2013). The sample and the full cohort describe the same customers, so
the full-cohort maximum-likelihood estimates must lie within two standard errors of the
sample's published estimates; the standard errors come from the observed information of the
sample's likelihood, computed here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import special

from rapport.envs.btyd import bgnbd_log_likelihood, fit_gamma_gamma
from rapport.envs.calibration import fit_models, load_cohort
from rapport.envs.transactions import load_transactions, summarise

DATA = Path(__file__).resolve().parent / "data"
MASTER, SAMPLE = DATA / "cdnow_master.csv", DATA / "cdnow_sample.csv"
CAL_END, HOLD_END = "1997-09-30", "1998-06-30"
PUBLISHED_BGNBD = np.array([0.2426, 4.4136, 0.7929, 2.4259])  # r, alpha, a, b (sample)
PUBLISHED_GG = np.array([6.25, 3.74, 15.44])  # p, q, gamma (sample)


def gamma_gamma_log_likelihood(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> float:
    """Fader & Hardie (2013), eq. 4, summed over the repeat customers."""
    p, q, g = params
    return float(np.sum(
        special.gammaln(p * x + q) - special.gammaln(p * x) - special.gammaln(q)
        + q * np.log(g) + (p * x - 1) * np.log(m) + p * x * np.log(x)
        - (p * x + q) * np.log(g + m * x)))


def standard_errors(log_likelihood, theta: np.ndarray) -> np.ndarray:
    """Square roots of the inverse observed information (central differences)."""
    k, h = theta.size, 1e-4 * theta
    hessian = np.zeros((k, k))
    for i in range(k):
        for j in range(k):
            di, dj = np.eye(k)[i] * h[i], np.eye(k)[j] * h[j]
            hessian[i, j] = (log_likelihood(theta + di + dj) - log_likelihood(theta + di - dj)
                             - log_likelihood(theta - di + dj)
                             + log_likelihood(theta - di - dj)) / (4 * h[i] * h[j])
    return np.sqrt(np.diag(np.linalg.inv(-hessian)))


@pytest.fixture(scope="module")
def sample_errors() -> tuple[np.ndarray, np.ndarray]:
    summary = load_cohort(SAMPLE, CAL_END, HOLD_END, keep_duplicates=True).summary
    bgnbd, gg, _ = fit_models(summary)
    x, t_x, T = summary["x"], summary["t_x"], summary["T"]
    bg_se = standard_errors(
        lambda th: float(bgnbd_log_likelihood(tuple(th), x, t_x, T).sum()),
        np.array(bgnbd.params))
    rep = summary["x"].to_numpy() > 0
    xs, ms = summary["x"].to_numpy()[rep].astype(float), summary["monetary_value"].to_numpy()[rep]
    gg_se = standard_errors(lambda th: gamma_gamma_log_likelihood(th, xs, ms),
                            np.array(gg.params))
    return bg_se, gg_se


def test_the_full_cohort_crashed_the_old_gamma_gamma_fit():
    summary = summarise(load_transactions(MASTER), CAL_END, HOLD_END)
    with pytest.raises(ValueError, match="monetary_value must be > 0 where frequency > 0"):
        fit_gamma_gamma(summary["x"], summary["monetary_value"])


@pytest.mark.parametrize("keep_duplicates", [False, True])
def test_full_cohort_fit_agrees_with_the_published_sample_estimates(keep_duplicates,
                                                                    sample_errors):
    cohort = load_cohort(MASTER, CAL_END, HOLD_END, keep_duplicates=keep_duplicates)
    cleaning = cohort.cleaning
    assert len(cohort.summary) == 23_570
    assert cleaning.rows_read == 69_659
    assert cleaning.duplicate_rows_dropped == (0 if keep_duplicates else 255)
    summary = cohort.summary
    zero_repeaters = int(((summary["x"] > 0) & (summary["monetary_value"] <= 0)).sum())
    assert zero_repeaters == 1
    bgnbd, gg, fit_warnings = fit_models(summary)
    assert fit_warnings == []
    assert bgnbd.n_customers == 23_570
    assert gg.n_customers == int((summary["x"] > 0).sum()) - 1 == 9_450
    bg_se, gg_se = sample_errors
    bg_z = (np.array(bgnbd.params) - PUBLISHED_BGNBD) / bg_se
    gg_z = (np.array(gg.params) - PUBLISHED_GG) / gg_se
    assert np.all(np.abs(bg_z) < 2), bg_z
    assert np.all(np.abs(gg_z) < 2), gg_z
