"""``rapport-export``: export the policy a training run logged (ONNX, .pt2, MLflow + card).

    rapport-export run_id=<run_id> formats=[onnx,torchscript,mlflow] register=retention-policy
    rapport-export run_id=<run_id> mode=explore register=retention-policy alias=challenger
    rapport-export run_id=<run_id> register=retention-policy gate_log=logs/today.parquet

``run(cfg)`` is the importable entry point; ``main`` the thin ``@hydra.main`` wrapper around it.
Config: ``conf/export.yaml`` (every key documented there and in :class:`ExportConfig`).
Files go to ``out_dir`` (default ``outputs/exports/<run_id>/<mode>``, git-ignored); with
``mlflow`` in ``formats`` the files and a pyfunc model are logged to the training run, and
``register=NAME`` registers the model and points ``alias`` at the new version. Prints a JSON
summary.

Promotion gate: **on whenever ``gate_log`` is given** (``gate`` unset), off without it;
``gate=false`` turns it off explicitly even with a ``gate_log``, and ``gate=true`` without a
``gate_log`` is an error. The candidate is registered with ``alias`` only if both hold:

1. its high-confidence lower bound (``rapport.agents.ope``), computed from the incumbent's logged
   feedback (``gate_log``, a logged-feedback Parquet file), beats the incumbent's value by
   ``gate_margin``;
2. the training run respects its own guardrails (the ``guardrails`` of its config, logged as the
   param ``guardrails``; :mod:`rapport.experiments.guardrails`), re-judged here from the KPIs the
   run logged to MLflow (``kpi/...``, ``baseline_diff/...`` with their CIs), each on the worse end
   of its CI. A run without guardrails passes this part.

Otherwise the version is registered without the alias. The decision, the numbers and every
guardrail check go into the policy card and onto the run (tag ``export.promotion``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from rapport.experiments.config import CONFIG_PATH
from rapport.experiments.errors import (
    UserError,
    check_writable,
    marks_failed_output,
    run_hydra_app,
    user_input,
)
from rapport.experiments.export.build import MODES
from rapport.experiments.export.exporter import ExportResult, export_run, normalise_formats
from rapport.experiments.export.pyfunc import ALIASES

__all__ = ["ExportConfig", "main", "run"]


@dataclass
class ExportConfig:
    """What ``rapport-export`` does (validated before any work starts)."""

    run_id: str | None = None
    """Training run whose logged policy is exported."""
    model_uri: str | None = None
    """The logged policy instead (``runs:/ID/policy``, ``models:/NAME/VERSION``)."""
    formats: list[str] = field(default_factory=lambda: ["onnx", "torchscript", "mlflow"])
    """Any of ``onnx``, ``torchscript`` (torch.export ``.pt2``), ``mlflow``."""
    mode: str = "greedy"
    """``greedy`` or ``explore``."""
    out_dir: str | None = None
    """Output folder; default ``outputs/exports/<run_id>/<mode>``."""
    opset: int = 18
    """ONNX opset."""
    register: str | None = None
    """Registered model name (needs ``mlflow`` in formats)."""
    alias: str = "champion"
    """``champion`` or ``challenger``."""
    model_name: str = "policy_export"
    """Name of the pyfunc model logged to the training run."""
    tracking_uri: str | None = None
    """MLflow tracking URI (default: ``tracking.uri``, ``$MLFLOW_TRACKING_URI``, ./mlflow.db)."""
    gate: bool | None = None
    """Apply the promotion gate (off-policy bound + the run's guardrails) before aliasing the new
    version; ``None``: on exactly when ``gate_log`` is given."""
    gate_log: str | None = None
    """Logged-feedback Parquet of the incumbent (required with ``gate``)."""
    gate_delta: float = 0.05
    """Failure probability of the gate's lower bound."""
    gate_margin: float = 0.0
    """Required improvement over the incumbent's value."""
    gate_reward_lower_bound: float | None = None
    """Smallest possible reward, for the concentration bound (default: the log's minimum)."""

    def __post_init__(self) -> None:
        if not self.run_id and not self.model_uri:
            raise ValueError("set run_id=<training run id> (or model_uri=<logged policy URI>)")
        self.formats = list(normalise_formats(list(self.formats)))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.alias not in ALIASES:
            raise ValueError(f"alias must be one of {', '.join(ALIASES)}, got {self.alias!r}")
        if self.register is not None and "mlflow" not in self.formats:
            raise ValueError("register=NAME needs mlflow in formats")
        if not 7 <= int(self.opset) <= 23:
            raise ValueError(f"opset must be in 7..23 (onnxruntime-supported), got {self.opset}")
        if self.out_dir is not None:
            check_writable("out_dir", self.out_dir, folder=True)
        implicit = self.gate is None
        self.gate = bool(self.gate_log) if implicit else bool(self.gate)
        if self.gate:
            if self.register is None:
                raise ValueError(("gate_log=... turns the promotion gate on" if implicit else "gate=true")
                                 + ", which decides the registry alias: set register=NAME (or gate=false)")
            if not self.gate_log:
                raise ValueError("gate=true needs gate_log=<incumbent's logged-feedback Parquet>")
            if not Path(self.gate_log).is_file():
                raise ValueError(f"gate_log {self.gate_log!r} is not a file")
            if not 0 < self.gate_delta < 1:
                raise ValueError(f"gate_delta must be in (0, 1), got {self.gate_delta}")
            if not (math.isfinite(self.gate_margin) and self.gate_margin >= 0):
                raise ValueError(f"gate_margin must be >= 0, got {self.gate_margin}")
            r_min = self.gate_reward_lower_bound
            if r_min is not None and not math.isfinite(r_min):
                raise ValueError(f"gate_reward_lower_bound must be a finite number or null, got {r_min}")


def to_config(cfg: DictConfig | dict[str, Any] | ExportConfig) -> ExportConfig:
    """The validated config; unknown keys raise naming them."""
    if isinstance(cfg, ExportConfig):
        return cfg
    with user_input():
        raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
        tracking = raw.pop("tracking", None) or {}
        raw.pop("hydra", None)
        known = {f.name for f in fields(ExportConfig)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown export key(s) {unknown}; valid: {', '.join(sorted(known))}")
        if raw.get("tracking_uri") is None and tracking.get("uri"):
            raw["tracking_uri"] = tracking["uri"]
        # typed merge first: a wrong type is an error naming the key, not a failed int("abc")
        typed = OmegaConf.merge(OmegaConf.structured(ExportConfig), raw)
        return OmegaConf.to_object(typed)  # type: ignore[return-value]


def _agent_is_baseline(params: dict[str, str]) -> bool:
    """The run's agent was its own evaluation baseline (no paired difference was measured)."""
    if params.get("agent.target") != params.get("evaluation.baseline.target"):
        return False
    own = {k.removeprefix("agent.params."): v for k, v in params.items() if k.startswith("agent.params.")}
    base = {k.removeprefix("evaluation.baseline.params."): v for k, v in params.items()
            if k.startswith("evaluation.baseline.params.")}
    return own == base


def guardrail_checks(run: dict[str, Any]) -> dict[str, Any]:
    """The training run's guardrails judged on the KPIs it logged: ``{"passed", "checks"}``."""
    from rapport.experiments import guardrails as gr

    params = run.get("params", {})
    with user_input(f"run {run.get('run_id')}: "):
        rules = gr.rules_from_params(params)
    if not rules:
        return {"passed": True, "checks": []}
    horizon = int(params.get("env.horizon", 0)) or None
    if horizon is None and any(r.kpi.endswith(gr.PER_MONTH) for r in rules):
        raise UserError(f"run {run.get('run_id')}: a *_per_month guardrail needs the logged param env.horizon")
    checks = gr.judge(rules, run.get("metrics", {}), horizon=horizon or 1,
                      is_baseline=_agent_is_baseline(params))
    return {"passed": all(c.passed for c in checks),
            "checks": [{"rule": c.rule, "passed": c.passed, "value": c.value, "ci_low": c.ci_low,
                        "ci_high": c.ci_high} for c in checks],
            "verdict": gr.verdict(checks)}


def _promotion_gate(cfg: ExportConfig):
    """The gate callable for :func:`export_run`: candidate vs the incumbent's logs, and the
    candidate run's own guardrails."""
    import numpy as np

    from rapport.agents.ope import (
        LoggedFeedback,
        OffPolicyEvaluator,
        OPESettings,
        promotion_decision,
    )

    def gate(loaded: Any, run: dict[str, Any]) -> dict[str, Any]:
        guard = guardrail_checks(run)
        logs = LoggedFeedback.read_parquet(cfg.gate_log)
        logs.check_schema(loaded.schema)
        r_min = (cfg.gate_reward_lower_bound if cfg.gate_reward_lower_bound is not None
                 else float(logs.reward.min()))
        rng = np.random.default_rng(0)
        evaluator = OffPolicyEvaluator(logs, OPESettings(reward_lower_bound=r_min,
                                                         delta=cfg.gate_delta), rng)
        evaluation = evaluator.evaluate(loaded.core, rng)
        name = "seq/hcope_pdis"
        if name not in evaluation.lower_bounds:
            name = next(iter(evaluation.lower_bounds))
        bound = evaluation.lower_bounds[name].value_lower_bound
        incumbent = evaluator.on_policy_value()[name.split("/")[0]]
        decision = promotion_decision(bound, incumbent, margin=cfg.gate_margin,
                                      delta=cfg.gate_delta, bound_name=name, alias=cfg.alias)
        card = decision.as_card()
        card["off_policy_promote"] = card["promote"]
        card["guardrails"] = guard
        if not guard["passed"]:
            card.update(promote=False, alias=None,
                        reason=f"keep the incumbent: the candidate run fails its guardrails "
                               f"({guard['verdict'].removeprefix('fail: ')}); off-policy: {card['reason']}")
        return card

    return gate


def run(cfg: DictConfig | dict[str, Any] | ExportConfig) -> ExportResult:
    """Validate the config, export, and print a JSON summary (returned as an ExportResult)."""
    settings = to_config(cfg)
    tracking_uri = settings.tracking_uri
    if tracking_uri is None:
        from rapport.experiments.tracking import resolve_tracking_uri

        tracking_uri = resolve_tracking_uri(None)
    label = settings.run_id or settings.model_uri.replace(":/", "_").replace("/", "_")
    out_dir = settings.out_dir or str(Path("outputs") / "exports" / label / settings.mode)
    result = export_run(settings.run_id, out_dir, formats=settings.formats, mode=settings.mode,
                        model_uri=settings.model_uri, register=settings.register,
                        alias=settings.alias, model_name=settings.model_name,
                        opset=settings.opset, tracking_uri=tracking_uri,
                        gate=_promotion_gate(settings) if settings.gate else None)
    print(json.dumps(result.summary(), indent=1))
    return result


def main(argv: list[str] | None = None) -> None:
    """Console script ``rapport-export`` (Hydra app over ``conf/export.yaml``); ``argv``: the
    overrides (default: the command line). Failures print one line and exit non-zero."""
    config_path = CONFIG_PATH

    @hydra.main(version_base="1.3", config_path=config_path, config_name="export")
    def _app(cfg: DictConfig) -> None:
        with marks_failed_output():
            run(cfg)

    run_hydra_app(_app, argv, prog="rapport-export")


if __name__ == "__main__":
    main()
