"""Off-policy evaluation: judge a policy from another policy's logs, and know how much to trust it.

* :mod:`rapport.agents.ope.logged` — :class:`LoggedFeedback`, the validated logged-feedback record, Parquet IO.
* :mod:`rapport.agents.ope.policies` — a policy's action distribution on logged contexts;
  :class:`ExplorationMixture`, a logging wrapper that keeps every action possible.
* :mod:`rapport.agents.ope.estimators` — IPS, SNIPS, DM, DR, SNDR, Switch-DR (batched numpy).
* :mod:`rapport.agents.ope.mips` — MIPS / SNMIPS / MDR for large creative catalogues (weights over
  attribute embeddings); :mod:`rapport.agents.ope.catalogue` — the catalogue a log can carry;
  :mod:`rapport.agents.ope.synthetic_catalogue` — a large-action bandit with an exact truth.
* :mod:`rapport.agents.ope.sequential` / :mod:`rapport.agents.ope.fqe` — PDIS, WPDIS, sequential DR, fitted-Q evaluation.
* :mod:`rapport.agents.ope.reward_model` — the cross-fitted ridge reward model behind DM / DR / FQE.
* :mod:`rapport.agents.ope.intervals` — bootstrap intervals, high-confidence lower bounds (Thomas et al. 2015).
* :mod:`rapport.agents.ope.evaluate` — :class:`OffPolicyEvaluator`: everything above for one log, many candidates.
* :mod:`rapport.agents.ope.promotion` — :func:`promotion_decision`, the safe-promotion gate.

Like the rest of ``agents``, nothing here imports the simulator: action sizes and feature names
come with the log (or a :class:`~rapport.agents.protocol.DecisionSchema`).
"""

from rapport.agents.ope.catalogue import CreativeCatalogue, InvalidCatalogueError
from rapport.agents.ope.estimators import (
    BANDIT_ESTIMATORS,
    BanditData,
    RatioTerms,
    bandit_terms,
    dm,
    dr,
    ips,
    sndr,
    snips,
    switch_dr,
)
from rapport.agents.ope.evaluate import (
    Estimate,
    OffPolicyEvaluator,
    OPESettings,
    PolicyEvaluation,
    ValueLowerBound,
)
from rapport.agents.ope.intervals import Interval, LowerBound, bootstrap_interval, hcope_lower_bound
from rapport.agents.ope.logged import InvalidFeedbackError, LoggedFeedback
from rapport.agents.ope.mips import (
    MIPS_ESTIMATORS,
    MarginalWeights,
    embedding_codes,
    marginal_bandit_data,
    marginal_weights,
    marginal_weights_from_log,
    mips_estimate,
    mips_terms,
)
from rapport.agents.ope.policies import ExplorationMixture, distribution_on_log, joint_distribution
from rapport.agents.ope.promotion import PromotionDecision, promotion_decision
from rapport.agents.ope.reward_model import ArmRidge, cross_fit
from rapport.agents.ope.sequential import (
    SEQUENTIAL_ESTIMATORS,
    SequentialData,
    Trajectories,
    fqe,
    pdis,
    sequential_dr,
    wpdis,
)

__all__ = [
    "ArmRidge", "BANDIT_ESTIMATORS", "BanditData", "CreativeCatalogue", "Estimate", "ExplorationMixture", "Interval",
    "InvalidCatalogueError", "InvalidFeedbackError", "LoggedFeedback", "LowerBound", "MIPS_ESTIMATORS",
    "MarginalWeights", "OPESettings", "OffPolicyEvaluator",
    "PolicyEvaluation", "PromotionDecision", "RatioTerms", "SEQUENTIAL_ESTIMATORS", "SequentialData",
    "Trajectories", "ValueLowerBound", "bandit_terms", "bootstrap_interval", "cross_fit",
    "distribution_on_log", "dm", "dr", "embedding_codes", "fqe", "hcope_lower_bound", "ips",
    "joint_distribution", "marginal_bandit_data", "marginal_weights", "marginal_weights_from_log",
    "mips_estimate", "mips_terms", "pdis", "promotion_decision", "sequential_dr", "sndr", "snips", "switch_dr", "wpdis",
]
