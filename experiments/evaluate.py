"""``rapport-evaluate``: evaluate policies logged in MLflow on common random numbers.

    rapport-evaluate policies='[runs:/<run_id>/policy, models:/my-policy/1]'
    rapport-evaluate policies='[<run_id>, <run_id>]' env.customers=50000 evaluation.seeds=5
    rapport-evaluate policies='[models:/my-policy@champion]' agent@evaluation.baseline=mass

Each entry of ``policies`` is an MLflow model URI (``runs:/…``, ``models:/…``), a bare run id
of a ``rapport-train`` run (its logged ``policy`` model) or a local MLflow model folder (one
holding an ``MLmodel`` file, e.g. a downloaded ``policy`` artifact). Every policy, the baseline and (unless
``evaluation.oracle=false``) the myopic oracle meet the same customers; the result is logged as
an MLflow run (``rapport.command=evaluate``) with per-policy metrics ``<label>/<glossary key>``,
the leaderboard (markdown, CSV, PNG), the tables and plots, and printed. ``run(cfg)`` returns
``{label: metrics}``.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rapport.experiments import builders
from rapport.experiments.config import (
    CONFIG_PATH,
    RunConfig,
    check_evaluation_fits,
    register_configs,
    to_settings,
)
from rapport.experiments.errors import (
    UserError,
    marks_failed_output,
    model_folder,
    run_hydra_app,
    user_input,
)
from rapport.experiments.evaluation import summarize
from rapport.experiments.progress import progress_enabled
from rapport.experiments.segments import segments_table
from rapport.experiments.sharding import evaluate_configured
from rapport.experiments.tracking import flatten_params, resolve_tracking_uri, start_run
from rapport.experiments.tracking_store import check_store_exists

_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def _metric_safe(label: str) -> str:
    """MLflow metric keys allow letters, digits, ``_ - . / : `` and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-./: ]", "_", label)


def _get_run(client: Any, run_id: str, entry: str, tracking_uri: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as err:
        raise UserError(f"policies entry {entry!r}: no run {run_id} in the tracking store {tracking_uri} "
                        "(rapport-train prints its run id; check tracking.uri / $MLFLOW_TRACKING_URI)") from err


def _classify(entry: str) -> tuple[str, str]:
    """(kind, entry) with kind ``folder`` | ``run_id`` | ``runs`` | ``models``; checks folders and
    syntax without touching the tracking store."""
    folder = model_folder("policies entry", entry)
    if folder is not None:
        return "folder", str(folder)
    if _RUN_ID.match(entry):
        return "run_id", entry
    for kind in ("runs", "models"):
        if entry.startswith(f"{kind}:/"):
            return kind, entry
    raise UserError(f"policies entry {entry!r} is not a run id, runs:/… or models:/… URI, "
                    "nor an MLflow model folder")


def resolve_policies(uris: list[str], tracking_uri: str) -> dict[str, tuple[str, Any]]:
    """``{label: (model_uri, LoadedPolicy)}``; bare run ids become ``runs:/<id>/policy``.
    Entries that cannot be resolved or loaded raise :class:`~rapport.experiments.errors.UserError`."""
    entries = [_classify(str(e).strip()) for e in uris]  # every entry checked before any loading
    import mlflow
    from mlflow.tracking import MlflowClient

    from rapport.experiments.policy_store import load_logged_policy

    if any(kind != "folder" for kind, _ in entries):
        check_store_exists(tracking_uri, f"policies entry {next(e for k, e in entries if k != 'folder')!r}")
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    out: dict[str, tuple[str, Any]] = {}
    for kind, entry in entries:
        label = entry
        if kind == "folder":
            label = Path(entry).resolve().name
        elif kind == "run_id":
            run = _get_run(client, entry, entry, tracking_uri)
            label = run.data.tags.get("rapport.label", entry[:8])
            entry = f"runs:/{entry}/policy"
        elif kind == "runs":
            run = _get_run(client, entry.split("/")[1], entry, tracking_uri)
            label = run.data.tags.get("rapport.label", label)
        try:
            policy = load_logged_policy(entry)
        except Exception as err:
            raise UserError(f"cannot load policy {entry!r}: {err}") from err
        while label in out:
            label += "'"
        out[label] = (entry, policy)
    return out


def run(cfg: DictConfig | RunConfig) -> dict[str, dict[str, float]]:
    """Evaluate ``cfg.policies`` with the baseline and oracle; log and print the leaderboard."""
    from rapport.experiments.compare import leaderboard, to_markdown, write_leaderboard
    from rapport.experiments.train import eval_settings, scenario_tags

    settings = to_settings(cfg)
    with user_input():
        if not settings.policies:
            raise ValueError("policies is empty: pass policies='[runs:/<run_id>/policy, models:/<name>/<version>]'")
        check_evaluation_fits(settings)
        scenario = builders.resolve_scenario(settings.env)
        if settings.evaluation.baseline is not None:
            builders.check_agent(settings.evaluation.baseline, settings.env)
    loaded = resolve_policies(list(settings.policies), resolve_tracking_uri(settings.tracking.uri))
    env = builders.make_env(settings.env, customers=1, scenario=scenario)
    for label, (uri, policy) in loaded.items():
        if tuple(policy.schema.feature_names) != tuple(env.feature_names) or \
                tuple(policy.schema.nvec) != tuple(int(k) for k in env.single_action_space.nvec):
            raise UserError(f"policy {label!r} ({uri}) was trained on another observation/action layout "
                             f"than scenario {scenario.name!r}: features {len(policy.schema.feature_names)} vs "
                             f"{len(env.feature_names)}, nvec {policy.schema.nvec}")
    seeds = builders.derive_seeds(settings.seed, settings.evaluation.seeds, settings.evaluation.seed)
    es = eval_settings(settings, scenario, seeds)
    policies: dict[str, Any] = {label: policy for label, (_, policy) in loaded.items()}
    roles = dict.fromkeys(policies, "policy")
    base = settings.evaluation.baseline
    if base is not None:
        policies[base.name] = builders.policy_factory(base, settings.constraints_for(base))
        roles[base.name] = "baseline"
    refs = {"oracle": None, "long_term_oracle": None}
    for name, (factory, role, _) in builders.reference_oracles(settings.evaluation, settings.constraints).items():
        policies[name], roles[name], refs[role] = factory, role, name
    params = {**flatten_params(OmegaConf.to_container(OmegaConf.structured(settings))), **seeds.as_params()}
    tags = {"rapport.command": "evaluate", "rapport.eval_fingerprint": es.fingerprint(), **scenario_tags(scenario),
            "rapport.policies": " ".join(uri for uri, _ in loaded.values())[:5000]}
    with start_run(settings.tracking, run_name=settings.tracking.run_name or "evaluate", params=params,
                   tags=tags) as tracker:
        ev = evaluate_configured(policies, es, settings, roles=roles, progress=progress_enabled(settings.progress))
        summary = summarize(ev, baseline=base.name if base else None, oracle=refs["oracle"],
                            long_term_oracle=refs["long_term_oracle"], n_boot=settings.evaluation.bootstrap, confidence=settings.evaluation.confidence,
                            seed=seeds.policy)
        result = {label: summary.metrics(label) for label in policies}
        for label, metrics in result.items():
            tracker.log_metrics({f"{_metric_safe(label)}/{k}": v for k, v in metrics.items()})
        board = leaderboard(summary, guardrails=settings.guardrail_rules, horizon=settings.env.horizon)
        if tracker.run_id is not None:
            from rapport.experiments import plots

            with tempfile.TemporaryDirectory() as tmp:
                write_leaderboard(board, Path(tmp) / "leaderboard", title="rapport-evaluate")
                ev.blocks.to_parquet(Path(tmp) / "leaderboard" / "blocks.parquet", index=False)
                segments = segments_table(ev.segments) if ev.segments is not None else None
                if segments is not None:  # what each policy does, by stage and value decile
                    segments.to_csv(Path(tmp) / "leaderboard" / "segments.csv", index=False)
                tracker.log_artifact(Path(tmp) / "leaderboard", "leaderboard")
            figs = {"plots/kpi_bars.png": plots.kpi_bars(summary.kpis),
                    "plots/cumulative_profit.png": plots.cumulative_profit(ev.weekly)}
            if segments is not None:
                figs["plots/segments.png"] = plots.segment_contact_rates(segments, title="contact rate per segment")
            for name, fig in figs.items():
                tracker.log_figure(fig, name)
                plots.close(fig)
        print(to_markdown(board))
        if tracker.run_id:
            print(f"[rapport] MLflow run {tracker.run_id} (experiment {settings.tracking.experiment!r})")
    return result


def main(argv: list[str] | None = None) -> None:
    """Console script ``rapport-evaluate`` (Hydra app over ``conf/evaluate.yaml``); ``argv``:
    the overrides (default: the command line). Failures print one line and exit non-zero."""
    import hydra

    register_configs()
    config_path = CONFIG_PATH

    @hydra.main(version_base="1.3", config_path=config_path, config_name="evaluate")
    def _app(cfg: DictConfig) -> None:
        with marks_failed_output():
            run(cfg)

    run_hydra_app(_app, argv, prog="rapport-evaluate")


if __name__ == "__main__":
    main()
