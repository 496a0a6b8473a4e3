"""Policies a marketer can read: distil any policy into a shallow decision tree over observable features.

API::

    data = collect(policy_factory, settings.env, customers=4000, weeks=52, seed=8100)
    held = collect(policy_factory, settings.env, customers=4000, weeks=52, seed=8200)
    tree = distill(data.obs, data.actions, env.feature_names, max_depth=3, nvec=env.single_action_space.nvec)
    tree.fidelity = fidelity(tree, held)          # share of held-out customer-weeks with the same action
    print(rules_text(tree, feature_names, channel_names, offer_names, spend_levels))
    vr = value_retained(policy_factory, tree, eval_settings)   # both KPI means + paired diff (distilled − original)

* :func:`collect` rolls the policy on its own population (observations and ``info["action_mask"]``
  handed to ``act`` as evaluation does) and records (observation, action) for every customer-week
  in which the customer is still reachable (the same weeks evaluation counts).
* :class:`DistilledPolicy` is a ``rapport.agents.protocol.Policy``: a scikit-learn
  ``DecisionTreeClassifier`` over the observation columns whose classes are *joint* actions
  (channel, offer, spend level) encoded as one label (``numpy.ravel_multi_index`` over ``nvec``).
  It acts deterministically (propensity 1.0); under an action mask it takes the most likely
  allowed joint action of the leaf's class distribution, or no contact (0, 0, 0) if the leaf
  holds none that is allowed.
* Fidelity is measured on a *separate* population (another seed), never on the training rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.tree import DecisionTreeClassifier

from rapport.experiments import builders
from rapport.experiments.config import EnvConfig
from rapport.experiments.evaluation import EvalSettings, evaluate, summarize

VALUE_KEYS = {"profit": "kpi/profit_per_customer", "lifetime_value": "kpi/lifetime_value_per_customer"}
"""KPIs :func:`value_retained` reports (per customer of the evaluation cohort)."""


HISTORY_PREFIXES = ("weeks_since_contact_", "contacts_4w_", "weeks_since_offer", "offers_8w", "redemptions_8w")
"""Observation columns that record the marketing a customer received (what the policy itself did)."""


def history_features(feature_names: Sequence[str]) -> tuple[str, ...]:
    """The contact- and offer-history columns of ``feature_names`` (for ``exclude_features``)."""
    return tuple(f for f in feature_names if f.startswith(HISTORY_PREFIXES))


# ------------------------------------------------------------------------------ collect
@dataclass
class Collected:
    """(observation, action) of every active customer-week of one rollout."""

    obs: np.ndarray
    """(rows, n_features) float32."""
    actions: np.ndarray
    """(rows, 3) int64 (channel, offer, spend level)."""
    masks: np.ndarray | None
    """(rows, sum(nvec)) bool: the action mask the policy acted under."""
    feature_names: tuple[str, ...]
    nvec: tuple[int, ...]
    weeks: int
    customers: int
    seed: int

    @property
    def joint(self) -> np.ndarray:
        return encode(self.actions, self.nvec)


def encode(actions: np.ndarray, nvec: Sequence[int]) -> np.ndarray:
    """(n, 3) actions -> (n,) joint-action labels."""
    a = np.asarray(actions, dtype=np.int64)
    return np.ravel_multi_index(tuple(a[:, j] for j in range(a.shape[1])), tuple(int(k) for k in nvec))


def decode(labels: np.ndarray, nvec: Sequence[int]) -> np.ndarray:
    """(n,) joint-action labels -> (n, 3) int64 actions."""
    return np.stack(np.unravel_index(np.asarray(labels, np.int64), tuple(int(k) for k in nvec)), axis=1).astype(np.int64)


def collect(policy_factory: Callable[[Any], Any] | Any, env_cfg: EnvConfig, customers: int,
            weeks: int | None = None, seed: int = 0, *, scenario: Any = None, policy_seed: int = 0,
            use_action_mask: bool = True, driver: Any = None) -> Collected:
    """Roll ``policy_factory`` (``env -> Policy``, or a policy) for ``weeks`` (default the horizon)
    on the population ``seed`` of ``customers`` and record every active customer-week.

    ``driver`` (a policy or factory): it chooses the actions that move the population, and the
    policy only labels the states the driver leads to (DAgger: a tree fitted to the policy's own
    rollout never sees the states its own mistakes lead to, e.g. customers left uncontacted for
    weeks, and can collapse to "never contact"). Labels assume the policy's action depends on the
    observation and mask only (no per-customer memory, as contact caps keep)."""
    if customers < 1:
        raise ValueError(f"customers must be >= 1, got {customers}")
    weeks = env_cfg.horizon if weeks is None else int(weeks)
    if not 1 <= weeks <= env_cfg.horizon:
        raise ValueError(f"weeks must be in 1..env.horizon={env_cfg.horizon}, got {weeks}")
    env = builders.make_env(env_cfg, customers=customers, scenario=scenario)
    policy = policy_factory if hasattr(policy_factory, "act") else policy_factory(env)
    drive = None if driver is None else (driver if hasattr(driver, "act") else driver(env))
    rng = np.random.default_rng([policy_seed, seed])
    drive_rng = np.random.default_rng([policy_seed, seed, 1])
    obs, info = env.reset(seed=seed)
    active = np.ones(customers, bool)
    rows_obs, rows_act, rows_mask = [], [], []
    for _ in range(weeks):
        mask = info["action_mask"] if use_action_mask else None
        actions, _ = policy.act(obs, rng, action_mask=mask)
        actions = np.asarray(actions, np.int64)
        rows_obs.append(np.asarray(obs, np.float32)[active])
        rows_act.append(actions[active])
        if mask is not None:
            rows_mask.append(np.asarray(mask, bool)[active])
        if drive is not None:
            actions = np.asarray(drive.act(obs, drive_rng, action_mask=mask)[0], np.int64)
        obs, _, terminated, _, info = env.step(actions)
        active &= ~np.asarray(terminated, bool)
        if not active.any():
            break
    return Collected(np.concatenate(rows_obs), np.concatenate(rows_act),
                     np.concatenate(rows_mask) if rows_mask else None, tuple(env.feature_names),
                     tuple(int(k) for k in env.single_action_space.nvec), weeks, customers, seed)


# ------------------------------------------------------------------------------ distil
@dataclass
class DistilledPolicy:
    """A decision tree over observable features that acts like the policy it was fitted to."""

    tree: DecisionTreeClassifier
    feature_names: tuple[str, ...]
    nvec: tuple[int, ...]
    binary_features: frozenset[str] = frozenset()
    """Features that took only the values 0 and 1 in the training rows (worded as yes/no)."""
    fidelity: float | None = None
    """Share of held-out customer-weeks where the tree's action equals the policy's (:func:`fidelity`)."""
    train_fidelity: float | None = None
    excluded_features: tuple[str, ...] = ()
    """Columns the tree may not split on (held constant before fitting and acting)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def _check(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        if obs.ndim != 2 or obs.shape[1] != len(self.feature_names):
            raise ValueError(f"obs must have shape (n, {len(self.feature_names)}) (feature_names), "
                             f"got {obs.shape}")
        if self.excluded_features:
            obs = obs.copy()
            obs[:, [self.feature_names.index(f) for f in self.excluded_features]] = 0.0
        return obs

    def act(self, obs: np.ndarray, rng: np.random.Generator | None = None, *,
            action_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        obs = self._check(obs)
        n = obs.shape[0]
        classes = self.tree.classes_.astype(np.int64)
        if action_mask is None:
            labels = classes[self.tree.predict_proba(obs).argmax(axis=1)] if n else np.zeros(0, np.int64)
            return decode(labels, self.nvec), np.ones(n)
        mask = np.asarray(action_mask, bool)
        if mask.shape != (n, sum(self.nvec)):
            raise ValueError(f"action_mask must have shape ({n}, {sum(self.nvec)}), got {mask.shape}")
        proba = self.tree.predict_proba(obs)
        parts = decode(classes, self.nvec)  # (K, 3)
        offs = np.concatenate([[0], np.cumsum(self.nvec)[:-1]]).astype(np.int64)
        allowed = np.ones((n, len(classes)), bool)
        for j in range(len(self.nvec)):
            allowed &= mask[:, offs[j] + parts[:, j]]
        score = np.where(allowed & (proba > 0), proba, -1.0)
        best = score.argmax(axis=1)
        labels = np.where(score[np.arange(n), best] > 0, classes[best], 0)
        return decode(labels, self.nvec), np.ones(n)


def distill(obs: np.ndarray, actions: np.ndarray, feature_names: Sequence[str], *, max_depth: int = 3,
            min_samples_leaf: int | float = 0.005, nvec: Sequence[int] | None = None,
            random_state: int = 0, exclude_features: Sequence[str] = ()) -> DistilledPolicy:
    """Fit a depth-``max_depth`` tree mapping observations to the policy's joint actions.

    ``actions``: (n, 3) action codes (or already-encoded (n,) joint labels with ``nvec`` given);
    ``nvec``: the action dimensions (default: each column's max + 1, which only suffices when every
    level appeared; pass ``env.single_action_space.nvec``). ``min_samples_leaf``: an int (rows) or
    a fraction of the rows, so no rule speaks for a handful of customer-weeks. ``exclude_features``:
    columns the tree may not use, e.g. the contact history (``weeks_since_contact_*``,
    ``contacts_4w_*``), which a policy's own past actions shape: from its own rollout a tree
    otherwise learns "contact whom we contacted last week", true but circular."""
    if not isinstance(max_depth, (int, np.integer)) or isinstance(max_depth, bool) or max_depth < 1:
        raise ValueError(f"max_depth must be an integer >= 1, got {max_depth!r}")
    if isinstance(min_samples_leaf, bool) or not (
            (isinstance(min_samples_leaf, (int, np.integer)) and min_samples_leaf >= 1)
            or (isinstance(min_samples_leaf, float) and 0.0 < min_samples_leaf < 1.0)):
        raise ValueError(f"min_samples_leaf must be an int >= 1 or a fraction in (0, 1), got {min_samples_leaf!r}")
    obs = np.asarray(obs, np.float32)
    feature_names = tuple(str(f) for f in feature_names)
    if obs.ndim != 2 or obs.shape[1] != len(feature_names):
        raise ValueError(f"obs has shape {obs.shape} but feature_names has {len(feature_names)} names: "
                         "obs must be (n, len(feature_names))")
    if obs.shape[0] == 0:
        raise ValueError("obs is empty: nothing to distil")
    excluded = tuple(str(f) for f in exclude_features)
    unknown = [f for f in excluded if f not in feature_names]
    if unknown:
        raise ValueError(f"exclude_features: unknown feature(s) {unknown}; valid: {', '.join(feature_names)}")
    if not np.isfinite(obs).all():
        raise ValueError("obs contains NaN or infinite values")
    actions = np.asarray(actions, np.int64)
    if actions.ndim == 1:
        if nvec is None:
            raise ValueError("actions given as joint labels need nvec")
        labels = actions
    elif actions.ndim == 2 and actions.shape[1] == 3:
        if nvec is None:
            nvec = tuple(int(k) for k in actions.max(axis=0) + 1)
        if (actions < 0).any() or (actions >= np.asarray(nvec)).any():
            raise ValueError(f"actions out of range for nvec={tuple(nvec)}")
        labels = encode(actions, nvec)
    else:
        raise ValueError(f"actions must be (n, 3) action codes or (n,) joint labels, got shape {actions.shape}")
    if labels.shape[0] != obs.shape[0]:
        raise ValueError(f"obs has {obs.shape[0]} rows but actions has {labels.shape[0]}")
    nvec = tuple(int(k) for k in nvec)
    if len(nvec) != 3:
        raise ValueError(f"nvec must be 3 sizes (channel, offer, spend), got {nvec}")
    tree = DecisionTreeClassifier(max_depth=int(max_depth), min_samples_leaf=min_samples_leaf,
                                  random_state=random_state)
    binary = frozenset(f for j, f in enumerate(feature_names) if np.isin(obs[:, j], (0.0, 1.0)).all())
    out = DistilledPolicy(tree, feature_names, nvec, binary, excluded_features=excluded)
    x = out._check(obs)
    tree.fit(x, labels)
    out.train_fidelity = float(np.mean(tree.predict(x) == labels))
    return out


def concat(parts: Sequence[Collected]) -> Collected:
    """Several collections as one (same features and action dimensions)."""
    first = parts[0]
    if any(p.feature_names != first.feature_names or p.nvec != first.nvec for p in parts):
        raise ValueError("collections to concatenate differ in feature_names or nvec")
    masks = None if any(p.masks is None for p in parts) else np.concatenate([p.masks for p in parts])
    return Collected(np.concatenate([p.obs for p in parts]), np.concatenate([p.actions for p in parts]), masks,
                     first.feature_names, first.nvec, first.weeks, sum(p.customers for p in parts), first.seed)


def distill_dagger(policy_factory: Any, env_cfg: EnvConfig, customers: int, seed: int, *, rounds: int = 2,
                   weeks: int | None = None, scenario: Any = None, **tree_kwargs: Any) -> tuple[DistilledPolicy, Collected]:
    """Fit a tree to the policy's own rollout (population ``seed``), then ``rounds`` times roll the
    current tree on a fresh population (``seed + r``), let the policy label the states it reaches,
    and refit on everything collected (DAgger). Returns the last tree and all the rows."""
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    data = collect(policy_factory, env_cfg, customers, weeks, seed, scenario=scenario)
    tree = distill(data.obs, data.actions, data.feature_names, nvec=data.nvec, **tree_kwargs)
    for r in range(1, rounds + 1):
        more = collect(policy_factory, env_cfg, customers, weeks, seed + r, scenario=scenario, driver=tree)
        data = concat([data, more])
        tree = distill(data.obs, data.actions, data.feature_names, nvec=data.nvec, **tree_kwargs)
    tree.extra["dagger_rounds"] = rounds
    return tree, data


def fidelity(distilled: DistilledPolicy, held_out: Collected) -> float:
    """Share of ``held_out`` customer-weeks where the tree (under the same action mask) chose the
    policy's joint action."""
    if tuple(held_out.feature_names) != distilled.feature_names:
        raise ValueError("held_out.feature_names differ from the distilled policy's feature_names")
    pred, _ = distilled.act(held_out.obs, None, action_mask=held_out.masks)
    return float(np.mean((pred == held_out.actions).all(axis=1)))


def agreement(distilled: DistilledPolicy, held_out: Collected) -> dict[str, float]:
    """Finer agreement on ``held_out``: whether to contact at all, the channel, the offer, the
    spend level and the joint action (= :func:`fidelity`)."""
    pred, _ = distilled.act(held_out.obs, None, action_mask=held_out.masks)
    pol = held_out.actions
    return {"contact": float(np.mean((pred[:, 0] > 0) == (pol[:, 0] > 0))),
            "channel": float(np.mean(pred[:, 0] == pol[:, 0])), "offer": float(np.mean(pred[:, 1] == pol[:, 1])),
            "spend": float(np.mean(pred[:, 2] == pol[:, 2])), "joint": float(np.mean((pred == pol).all(axis=1)))}


# ------------------------------------------------------------------------------ words
def action_words(action: Sequence[int], channel_names: Sequence[str], offer_names: Sequence[str],
                 spend_levels: Sequence[float]) -> str:
    """(channel, offer, spend level) in words, e.g. "email, offer discount_10, no media spend"."""
    c, o, s = (int(x) for x in action)
    words = ["no contact" if c == 0 else str(channel_names[c - 1])]
    if c > 0:
        words.append("no offer" if o == 0 or offer_names[o] == "none" else f"offer {offer_names[o]}")
    spend = float(spend_levels[s])
    words.append("no media spend" if spend == 0 else f"media spend ${spend:g}/week")
    return ", ".join(words)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _conditions(bounds: dict[str, list[float]], binary: frozenset[str]) -> list[str]:
    out = []
    for f, (lo, hi) in bounds.items():
        if f in binary and lo <= 0.0 and hi >= 1.0:
            continue
        if f in binary:
            out.append(f if lo >= 0.0 else f"not {f}")
        elif lo > -np.inf and hi < np.inf:
            out.append(f"{_fmt(lo)} < {f} <= {_fmt(hi)}")
        elif lo > -np.inf:
            out.append(f"{f} > {_fmt(lo)}")
        else:
            out.append(f"{f} <= {_fmt(hi)}")
    return out


def rules(distilled: DistilledPolicy, feature_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The tree's leaves as rules: conditions (feature, low, high], the leaf's joint action, the
    share of training customer-weeks it covers and the share of them where the policy did the same."""
    names = tuple(feature_names) if feature_names is not None else distilled.feature_names
    if len(names) != len(distilled.feature_names):
        raise ValueError(f"feature_names has {len(names)} names, the tree was fitted on {len(distilled.feature_names)}")
    t = distilled.tree.tree_
    total = float(t.n_node_samples[0])
    classes = distilled.tree.classes_.astype(np.int64)
    out: list[dict[str, Any]] = []

    def walk(node: int, bounds: dict[str, list[float]]) -> None:
        if t.children_left[node] == t.children_right[node]:  # leaf
            dist = np.asarray(t.value[node][0], float)
            k = int(dist.argmax())
            out.append({"bounds": {f: tuple(b) for f, b in bounds.items()},
                        "action": tuple(int(x) for x in decode(classes[[k]], distilled.nvec)[0]),
                        "share": float(t.n_node_samples[node]) / total,
                        "purity": float(dist[k] / dist.sum())})
            return
        f, thr = names[int(t.feature[node])], float(t.threshold[node])
        lo, hi = bounds.get(f, [-np.inf, np.inf])
        walk(int(t.children_left[node]), {**bounds, f: [lo, min(hi, thr)]})
        walk(int(t.children_right[node]), {**bounds, f: [max(lo, thr), hi]})

    walk(0, {})
    return out


def rules_text(distilled: DistilledPolicy, feature_names: Sequence[str], channel_names: Sequence[str],
               offer_names: Sequence[str], spend_levels: Sequence[float]) -> str:
    """The tree as a plain-words rule list, one line per leaf, largest share first, e.g.
    "if p_alive > 0.42 and weeks_since_contact_email > 2.5: email, offer discount_10, no media
    spend (38 % of customer-weeks; the policy did this in 91 % of them)"."""
    binary = frozenset(distilled.binary_features)
    lines = []
    for r in sorted(rules(distilled, feature_names), key=lambda r: -r["share"]):
        conds = _conditions({f: list(b) for f, b in r["bounds"].items()}, binary)
        head = ("if " + " and ".join(conds)) if conds else "always"
        lines.append(f"{head}: {action_words(r['action'], channel_names, offer_names, spend_levels)} "
                     f"({100 * r['share']:.0f} % of customer-weeks; the policy did this in "
                     f"{100 * r['purity']:.0f} % of them)")
    lines.append("(where the rule's action is not allowed, e.g. after an opt-out: the leaf's next most "
                 "frequent allowed action, else no contact)")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ value
def value_retained(original_factory: Any, distilled: DistilledPolicy, es: EvalSettings, *,
                   n_boot: int = 1000, seed: int = 0) -> dict[str, dict[str, float]]:
    """Evaluate the original and the distilled policy on the same populations (common random
    numbers): per KPI of :data:`VALUE_KEYS` the two means and the paired difference distilled −
    original with its bootstrap CI, and the share of the original's value the tree keeps."""
    ev = evaluate({"original": original_factory, "distilled": distilled}, es)
    s = summarize(ev, baseline="original", n_boot=n_boot, seed=seed)
    out: dict[str, dict[str, float]] = {}
    for short, key in VALUE_KEYS.items():
        orig = float(s.kpis[(s.kpis.policy == "original") & (s.kpis.key == key)]["mean"].iloc[0])
        dist = float(s.kpis[(s.kpis.policy == "distilled") & (s.kpis.key == key)]["mean"].iloc[0])
        d = s.diffs[(s.diffs.policy == "distilled") & (s.diffs.key == key)].iloc[0]
        out[short] = {"original": orig, "distilled": dist, "diff": float(d["diff"]),
                      "ci_low": float(d.ci_low), "ci_high": float(d.ci_high),
                      "retained": dist / orig if orig != 0 else float("nan")}
    return out


# ------------------------------------------------------------------------------ rapport-train
RULES_TAG = "rapport.rules"
"""Run tag holding the distilled rules in words (the policy card reads tags and metrics)."""


def distill_for_run(policy_factory: Any, settings: Any, scenario: Any, eval_seed: int, *,
                    customers: int = 2000, rounds: int = 2) -> tuple[dict[str, float], str]:
    """``evaluation.distill_depth`` of ``rapport-train``: a tree of that depth fitted by DAgger on
    populations ``eval_seed + 1000 ..`` (never an evaluation population), its fidelity on the first
    evaluation population, and its value there paired with the agent's (common random numbers).
    Returns the ``distill/*`` metrics and the rules in words."""
    n = min(int(customers), int(settings.env.customers))
    tree, _ = distill_dagger(policy_factory, settings.env, n, eval_seed + 1000, rounds=rounds,
                             scenario=scenario, max_depth=settings.evaluation.distill_depth)
    held = collect(policy_factory, settings.env, n, seed=eval_seed, scenario=scenario)
    metrics = {"distill/fidelity": fidelity(tree, held)}
    es = EvalSettings(scenario, n, settings.env.horizon, (eval_seed,),
                      annual_discount_rate=settings.evaluation.annual_discount_rate,
                      blocks=min(settings.evaluation.blocks, n))
    for short, v in value_retained(policy_factory, tree, es, n_boot=settings.evaluation.bootstrap).items():
        metrics[f"distill/{short}_diff"] = v["diff"]
        metrics[f"distill/{short}_diff/ci_low"] = v["ci_low"]
        metrics[f"distill/{short}_diff/ci_high"] = v["ci_high"]
    env = builders.make_env(settings.env, customers=1, scenario=scenario)
    text = rules_text(tree, env.feature_names, env.channel_names, env.offer_names, env.spend_levels)
    return metrics, text
