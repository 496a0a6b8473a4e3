"""The policy card: what a production team needs to know about an exported policy.

Written beside every export as ``policy_card.json`` (machine-readable) and ``policy_card.md``
(for people): where the policy comes from (run, training config, scenario and its version),
how well it did (evaluation KPIs with confidence intervals, paired differences against the
baseline), what it does per segment (lifecycle stage and value decile: contact rate, channel and
offer split, media spend), what goes in (feature schema), what comes out (action meanings, propensity
semantics), which files hold it, and its known limits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rapport.experiments.export.build import ExportSpec
from rapport.experiments.segments import SEGMENTS_TAG, VALUE_DECILE_DEFINITION, rows_from_tag

__all__ = ["FEATURE_MEANINGS", "build_card", "card_markdown", "write_card"]

FEATURE_MEANINGS: dict[str, str] = {
    "recency_weeks": "weeks since the last purchase (T - t_x)",
    "frequency": "repeat purchases x",
    "tenure_weeks": "weeks since the first purchase T",
    "avg_spend": "mean net order value over x + 1 orders, $",
    "p_alive": "BG/NBD P(alive | x, t_x, T) at the scenario's parameters",
    "weeks_since_offer": "weeks since the last delivered offer, capped at 52",
    "offers_8w": "weeks with a delivered offer in the last 8",
    "redemptions_8w": "weeks with a redeemed discount in the last 8",
    "horizon_progress": "week / horizon of the training episode",
    "prospect": "1 if the person has not bought yet (reachable through paid media only), else 0",
    "brand_awareness": "the market's brand awareness in [0, 1] (tracking surveys; constant without mass media)",
    "belief_category": "the firm's guess of the customer's favourite category (0..K-1), from the orders it has seen",
}
_PATTERNS = (
    (r"optin_(.+)", "1 if the customer can be reached on {0} (consent), else 0"),
    (r"weeks_since_contact_(.+)", "weeks since the last {0} contact, capped at 52"),
    (r"contacts_4w_(.+)", "delivered {0} contacts in the last 4 weeks"),
    (r"stage_(.+)", "1 if the lifecycle stage is {0} (one-hot), else 0"),
)
CARD_VERSION = 1


def feature_meaning(name: str) -> str:
    if name in FEATURE_MEANINGS:
        return FEATURE_MEANINGS[name]
    for pattern, text in _PATTERNS:
        m = re.fullmatch(pattern, name)
        if m:
            return text.format(*m.groups())
    return "(no description)"


def _kpi_values(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if k.startswith(prefix)}


def _kpis(metrics: Mapping[str, float], prefix: str) -> list[dict[str, Any]]:
    rows = []
    for key in sorted(metrics):
        if not key.startswith(prefix) or key.endswith(("/ci_low", "/ci_high")) or \
                "/ci_" in key:
            continue
        rows.append({"key": key, "mean": metrics[key], "ci_low": metrics.get(f"{key}/ci_low"),
                     "ci_high": metrics.get(f"{key}/ci_high")})
    return rows


def _limits(spec: ExportSpec, constraints: Mapping[str, Any] | None,
            scenario: Mapping[str, Any]) -> list[str]:
    limits = [
        f"Trained and evaluated on simulated customers (scenario {scenario.get('name', '?')!r}, "
        f"version {scenario.get('version', '?')}); real customers respond differently, so check "
        "it on real traffic (e.g. off-policy evaluation of logged decisions) before relying on "
        "the KPIs below.",
        "Features must be computed exactly as Rapport's observation (same units, caps at 52 "
        "weeks, one-hot stages, p_alive at the scenario's BG/NBD parameters); the export cannot "
        "detect a feature computed differently.",
        "Eligibility comes only from observable features: "
        + str(spec.eligibility.get("rule", "")) + ". Other business rules are not inside.",
        "The raw ONNX / .pt2 graphs do not validate input (NaN gives undefined decisions); the "
        "MLflow model and experiments/export/decision_runtime.py do, and reject bad input with "
        "the column named.",
    ]
    inside = dict(spec.eligibility.get("contact_rules") or {})
    active = {k: v for k, v in (constraints or {}).items()
              if v not in (None, 0, False) and k not in inside}
    if active:
        limits.append("The training run applied business constraints that are NOT in the export "
                      f"(they rank the whole batch, not one customer): {json.dumps(active)}; "
                      "apply them downstream.")
    if spec.mode == "greedy":
        limits.append("Greedy mode never explores: propensities are 1.0, so logs of this policy "
                      "alone cannot evaluate other policies off-policy.")
    if spec.policy_kind.startswith("bandit:"):
        limits.append("Bandit scores are float32, as in the in-memory policy; arms whose scores "
                      "differ by less than float32 rounding may be ranked differently by another "
                      "matrix-product kernel (the parity test bounds this).")
    if spec.rule == "thompson":
        limits.append("Thompson propensities are Monte-Carlo estimates (hits+1)/(M+1): never 0, "
                      "biased upward by at most 1/(M+1), standard error <= 0.5/sqrt(M+1); "
                      "not exact probabilities.")
    return limits


def build_card(spec: ExportSpec, *, run: Mapping[str, Any] | None = None,
               files: Mapping[str, str] | None = None,
               constraints: Mapping[str, Any] | None = None,
               scenario: Mapping[str, Any] | None = None,
               promotion: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The card as a JSON-friendly dict.

    Parameters
    ----------
    run
        ``run_id``, ``experiment``, ``params`` (flattened training config), ``tags`` and
        ``metrics`` of the training run (any may be missing).
    files
        Format -> file name of each export written beside the card.
    constraints
        The run's business constraints (listed as a known limit when active).
    scenario
        ``name`` and ``version`` of the scenario the policy was trained on.
    promotion
        The promotion gate's decision and numbers, when one was applied.
    """
    run = dict(run or {})
    metrics = dict(run.get("metrics", {}))
    tags = dict(run.get("tags", {}))
    segments = rows_from_tag(tags.pop(SEGMENTS_TAG, None))  # rapport-train's table, as a tag
    rules = tags.pop("rapport.rules", None)  # evaluation.distill_depth > 0: the tree in words
    scenario = dict(scenario or {})
    n_ch, n_off, n_sp = spec.nvec
    return {
        "card_version": CARD_VERSION,
        "policy": {"kind": spec.policy_kind, "mode": spec.mode, "rule": spec.rule,
                   "propensity": spec.propensity, "preprocessing": spec.preprocessing},
        "source": {"run_id": run.get("run_id"), "experiment": run.get("experiment"),
                   "model_uri": run.get("model_uri"), "agent": run.get("agent")},
        "scenario": scenario,
        "training_config": dict(run.get("params", {})),
        "tags": tags,
        "evaluation": {"kpis": _kpis(metrics, "kpi/"),
                       "paired_vs_baseline": _kpis(metrics, "baseline_diff/"),
                       "regret": _kpis(metrics, "regret/"),
                       "by_lifecycle_stage": (_segment_rows(segments, "stage") if segments
                                              else _segments(metrics)),
                       "by_value_decile": _segment_rows(segments, "value_decile"),
                       "value_decile_definition": VALUE_DECILE_DEFINITION,
                       "readable_rules": None if rules is None else {
                           "text": rules, **{k: v for k, v in _kpi_values(metrics, "distill/").items()}}},
        "features": [{"index": i, "name": f, "meaning": feature_meaning(f)}
                     for i, f in enumerate(spec.feature_names)],
        "actions": {
            "channel": ["no contact", *spec.channel_names][:n_ch],
            "offer": list(spec.offer_names)[:n_off],
            "spend": [f"${s:g} per person per week" for s in spec.spend_levels][:n_sp],
            "eligibility": spec.eligibility,
        },
        "inputs": [{"name": "features", "shape": ["n", len(spec.feature_names)],
                    "dtype": "float32"}] + [asdict(n) for n in spec.noise_inputs],
        "outputs": [{"name": "actions", "shape": ["n", 3], "dtype": "int64",
                     "meaning": "(channel, offer, spend) indices"},
                    {"name": "propensity", "shape": ["n"], "dtype": "float64",
                     "meaning": spec.propensity}],
        "files": dict(files or {}),
        "promotion": dict(promotion) if promotion else None,
        "known_limits": _limits(spec, constraints, scenario),
    }


def _segments(metrics: Mapping[str, float]) -> list[dict[str, Any]]:
    """Per lifecycle stage (from the run's ``kpi/<part>_<stage>_per_customer`` metrics): weeks in
    the stage, contacts, offers and media spend per customer, and the share of weeks contacted."""
    stages = [k.removeprefix("kpi/weeks_").removesuffix("_per_customer")
              for k in sorted(metrics) if k.startswith("kpi/weeks_") and k.endswith("_per_customer")]
    rows = []
    for st in stages:
        get = {part: metrics.get(f"kpi/{part}_{st}_per_customer")
               for part in ("weeks", "contacts", "offers", "media_cost")}
        weeks, contacts = get["weeks"], get["contacts"]
        rate = contacts / weeks if weeks and contacts is not None else None
        rows.append({"stage": st, **get, "contact_rate": rate})
    return rows


def _segment_rows(segments: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Rows of one segment kind from the run's segment table (tag ``rapport.segments``): per
    customer of the population, the segment's cohort share (value deciles), weeks, contacts
    (total and by channel), offers (total and by type; ``none``: contacted without an offer),
    media spend, profit and the share of its weeks with a contact."""
    rows = []
    for r in segments:
        if r.get("segment_kind") != kind:
            continue
        channels = {k.removeprefix("contacts_"): v for k, v in r.items()
                    if k.startswith("contacts_") and v is not None}
        offers = {k.removeprefix("offers_"): v for k, v in r.items() if k.startswith("offers_") and v is not None}
        rows.append({"stage" if kind == "stage" else "segment": r.get("segment"),
                     "customers": r.get("customers"), "weeks": r.get("weeks"), "contacts": r.get("contacts"),
                     "contact_rate": r.get("contact_rate"),
                     "offers": sum(v for k, v in offers.items() if k != "none"),
                     "media_cost": r.get("media_cost"), "profit": r.get("profit"),
                     "contacts_by_channel": channels, "offers_by_type": offers})
    return rows


def _split(parts: Mapping[str, float] | None, total: float | None) -> str:
    """``email 70%, sms 30%``: each part's share of ``total``, zero parts left out."""
    if not parts or not total:
        return "—"
    return ", ".join(f"{k} {v / total:.0%}" for k, v in parts.items() if v)


def _segment_markdown(rows: list[dict[str, Any]], key: str, title: str) -> list[str]:
    if not rows:
        return []
    detailed = "contacts_by_channel" in rows[0]
    head = [key] + (["customers"] if key == "segment" else []) + ["weeks", "contacts", "contact rate",
                                                                   "offers", "media $"]
    head += ["profit", "channels (share of contacts)", "offer types (share of contacts)"] if detailed else []
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r[key])] + ([_fmt(r.get("customers"))] if key == "segment" else [])
        cells += [_fmt(r.get(c)) for c in ("weeks", "contacts", "contact_rate", "offers", "media_cost")]
        if detailed:
            cells += [_fmt(r.get("profit")), _split(r["contacts_by_channel"], r.get("contacts")),
                      _split(r["offers_by_type"], r.get("contacts"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _fmt(x: Any) -> str:
    return "—" if x is None else f"{x:.4g}" if isinstance(x, float) else str(x)


def card_markdown(card: Mapping[str, Any]) -> str:
    """The card for people."""
    p, src, sc = card["policy"], card["source"], card["scenario"]
    lines = [f"# Policy card: {p['kind']} ({p['mode']})", "",
             f"- Source run: `{src.get('run_id')}` (experiment `{src.get('experiment')}`), "
             f"logged policy `{src.get('model_uri')}`",
             f"- Agent: `{json.dumps(src.get('agent'))}`",
             f"- Scenario: `{sc.get('name', '?')}` version `{sc.get('version', '?')}`",
             f"- Decision rule: {p['rule']}; preprocessing: {p['preprocessing']}",
             f"- Propensity: {p['propensity']}", ""]
    if card.get("promotion"):
        lines += ["## Promotion gate", "", "```json", json.dumps(card["promotion"], indent=1),
                  "```", ""]
    lines += ["## Evaluation", ""]
    for title, key in (("KPIs", "kpis"), ("Paired difference vs baseline", "paired_vs_baseline"),
                       ("Regret vs the oracles (profit: the myopic oracle; lifetime value: the long-term oracle when evaluated, else the myopic one)", "regret")):
        rows = card["evaluation"][key]
        if not rows:
            continue
        lines += [f"**{title}**", "", "| metric | mean | CI low | CI high |", "|---|---|---|---|"]
        lines += [f"| `{r['key']}` | {_fmt(r['mean'])} | {_fmt(r['ci_low'])} | "
                  f"{_fmt(r['ci_high'])} |" for r in rows]
        lines.append("")
    ev = card["evaluation"]
    lines += _segment_markdown(
        ev.get("by_lifecycle_stage") or [], "stage",
        "**What it does, by lifecycle stage** (at the week's decision; per customer of the population; "
        "contact rate: share of the stage's customer-weeks with a contact, 1 = contacted every week)")
    lines += _segment_markdown(
        ev.get("by_value_decile") or [], "segment",
        "**What it does, by value decile** (" + str(ev.get("value_decile_definition", "")) + "; per "
        "customer of the population; customers: the segment's share of the cohort; contact rate: share "
        "of the segment's customer-weeks with a contact)")
    readable = ev.get("readable_rules")
    if readable:
        lines += ["**The policy as rules** (a decision tree over the observable features distilled from "
                  "it, `evaluation.distill_depth`; an approximation, not the exported policy: fidelity "
                  f"{_fmt(readable.get('distill/fidelity'))} = share of the first evaluation population's "
                  "customer-weeks where the rules choose the policy's action; lifetime value of the rules "
                  f"− the policy's: {_fmt(readable.get('distill/lifetime_value_diff'))} "
                  f"[{_fmt(readable.get('distill/lifetime_value_diff/ci_low'))}, "
                  f"{_fmt(readable.get('distill/lifetime_value_diff/ci_high'))}])", "", "```",
                  readable["text"], "```", ""]
    if not any(ev.get(k) for k in ("kpis", "paired_vs_baseline", "regret")):
        lines += ["No evaluation metrics were found on the source run.", ""]
    lines += ["## Inputs", "", "| # | feature | meaning |", "|---|---|---|"]
    lines += [f"| {f['index']} | `{f['name']}` | {f['meaning']} |" for f in card["features"]]
    lines += ["", "Exploration inputs: " + (", ".join(
        f"`{n['name']}` {n['shape']} {n['distribution']} ({n['meaning']})"
        for n in card["inputs"][1:]) or "none (greedy)"), ""]
    a = card["actions"]
    lines += ["## Actions", "", "| dim | index: meaning |", "|---|---|"]
    for dim in ("channel", "offer", "spend"):
        lines.append(f"| {dim} | " + "; ".join(f"{i}: {m}" for i, m in enumerate(a[dim])) + " |")
    lines += ["", f"Eligibility: {a['eligibility'].get('rule', '')}", "", "## Files", ""]
    lines += [f"- {fmt}: `{name}`" for fmt, name in card["files"].items()]
    lines += ["", "## Training config", ""]
    lines += [f"- `{k}` = `{v}`" for k, v in sorted(card["training_config"].items())] or ["—"]
    lines += ["", "## Known limits", ""] + [f"- {x}" for x in card["known_limits"]]
    return "\n".join(lines) + "\n"


def write_card(card: Mapping[str, Any], directory: str | Path) -> tuple[Path, Path]:
    """Write ``policy_card.json`` and ``policy_card.md`` into ``directory``."""
    directory = Path(directory)
    js, md = directory / "policy_card.json", directory / "policy_card.md"
    js.write_text(json.dumps(card, indent=1, default=str))
    md.write_text(card_markdown(card))
    return js, md
