"""Fitted-Q evaluation over a finite weekly horizon, cross-fitted by customer.

The horizon is finite and the week is part of the problem (campaign calendars, the end of the
evaluation window), so Q is time-indexed and fitted backwards, one regression per step
(Le, Voloshin & Yue 2019, with the finite-horizon recursion)::

    Q̂_{T-1}(s, a) ≈ E[r_{T-1} | s, a]
    Q̂_t(s, a)     ≈ E[r_t + γ V̂_{t+1}(s_{t+1}) | s, a],   V̂_t(s) = Σ_a π_e(a|s) Q̂_t(s, a),

each a :class:`~rapport.agents.ope.reward_model.ArmRidge` on the rows logged at step t. A trajectory
that ended has V̂ = 0 afterwards. With ``n_folds`` > 1 every fold gets its own backward chain
trained on the other folds' customers, and each customer's Q̂ and V̂ come from the chain that
never saw them (what sequential DR needs to stay honest).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from rapport.agents.ope.reward_model import ArmRidge, ArmRidgeFit, Standardizer
from rapport.agents.ope.sequential import Trajectories


@dataclass(frozen=True)
class FQEResult:
    q_logged: np.ndarray
    """(n,) out-of-fold Q̂_t(s, a) at each log row's logged action."""
    v_target: np.ndarray
    """(n,) out-of-fold V̂_t(s) at each log row."""
    chains: tuple[tuple[ArmRidgeFit, ...], ...]
    """chains[f][t]: fold f's model for step t."""


def fitted_q_evaluation(traj: Trajectories, context: np.ndarray, joint: np.ndarray, reward: np.ndarray,
                        target_dist: sp.csr_matrix, model: ArmRidge, folds_by_trajectory: np.ndarray,
                        *, gamma: float = 1.0) -> FQEResult:
    """Backward, cross-fitted FQE (module docstring).

    Parameters
    ----------
    traj : the log's trajectories
    context, joint, reward : per log row (n, d), (n,), (n,)
    target_dist : (n, K) target policy distribution at every log row
    model : the regression used at every step
    folds_by_trajectory : (N,) fold of each trajectory (customers never straddle folds)
    gamma : discount in [0, 1]
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    n_folds = int(folds_by_trajectory.max()) + 1
    std = Standardizer.fit(context)  # label-free: shared by every fold and step
    n, T = context.shape[0], traj.horizon
    q_out, v_out = np.zeros(n), np.zeros(n)
    chains: list[list[ArmRidgeFit | None]] = [[None] * T for _ in range(n_folds)]
    # v_next[f][i]: fold f's V̂_{t+1} at trajectory i's next state (0 when it has none)
    v_next = np.zeros((n_folds, traj.n_trajectories))
    for t in reversed(range(T)):
        live = np.flatnonzero(traj.rows[:, t] >= 0)
        if live.size == 0:
            v_next[:] = 0.0
            continue
        rows = traj.rows[live, t]
        x, a, dist = context[rows], joint[rows], target_dist[rows]
        fold = folds_by_trajectory[live]
        v_here = np.zeros((n_folds, traj.n_trajectories))
        for f in range(n_folds):
            train = fold != f if n_folds > 1 else np.ones(live.size, bool)
            if not train.any():
                raise ValueError(f"no trajectory outside fold {f} reaches step {t}, so its chain cannot be "
                                 "fitted there: use fewer folds or more customers")
            y = reward[rows] + gamma * v_next[f, live]
            fit = model.fit(x[train], a[train], y[train], std)
            chains[f][t] = fit
            v_here[f, live] = fit.predict_expected(x, dist)
            mine = fold == f
            q_out[rows[mine]] = fit.predict_at(x[mine], a[mine])
            v_out[rows[mine]] = v_here[f, live[mine]]
        v_next = v_here
    return FQEResult(q_out, v_out, tuple(tuple(c) for c in chains))
