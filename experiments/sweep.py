"""Optuna sweeps over any config key, driven by Optuna's ask/tell API and Hydra's compose API.

    python -m rapport.experiments.sweep experiment=sweep_linucb
    python -m rapport.experiments.sweep experiment=sweep_ppo sweep.n_trials=6 sweep.n_jobs=2
    python -m rapport.experiments.sweep agent=mass '+sweep.params={agent.params.every_k_weeks: "range(1, 9)"}'

Why not Hydra's Optuna sweeper plugin: its release pins optuna < 3, whose SQLite storage breaks
with SQLAlchemy 2. This module does the same job on current Optuna: it reads the search space
from ``sweep.params`` in Hydra's sweep syntax, asks Optuna for ``sweep.n_jobs`` trials at a time,
composes each trial's config with Hydra (the command line's overrides + the trial's values),
runs :func:`rapport.experiments.train.run` (in joblib processes when ``n_jobs > 1``) and tells Optuna the
trial's ``sweep.objective``.

Search-space syntax (Hydra's override grammar)::

    interval(0.1, 2.0)            float in [0.1, 2.0]
    tag(log, interval(1e-4, 1))   float, log-uniform
    interval(1, 10)               int in [1, 10] (both ends integers)
    range(1, 9)                   int in 1..8 (Python's range: the end is excluded), step 1
    range(0, 100, 10)             0, 10, …, 90
    choice(email, sms, push)      categorical

MLflow: one parent run per sweep (``rapport.command=sweep``) with every trial nested under it;
the parent gets ``sweep/best_value``, the best parameters as tags, ``sweep/trials.csv``, the
optimisation history plot and the trials' leaderboard (with ``pareto.png``: which trials are
Pareto-efficient over profit, lifetime value, contacts, churn and opt-outs, and the runs'
guardrails judged on every trial). Every config key and value is validated
before the first trial runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rapport.experiments.config import CONFIG_PATH, RunConfig, register_configs, to_settings
from rapport.experiments.errors import UserError, marks_failed_output, run_hydra_app, user_input


def search_space(params: dict[str, str]) -> dict[str, Any]:
    """Optuna distributions from ``{key: sweep expression}``; errors name the key."""
    import optuna.distributions as D
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    parser = OverridesParser.create()
    space: dict[str, Any] = {}
    for key, expr in params.items():
        try:
            value = parser.parse_override(f"{key}={expr}").value()
        except Exception as err:
            raise ValueError(f"sweep.params.{key}: cannot parse {expr!r} ({err}); use interval(a, b), "
                             "tag(log, interval(a, b)), range(a, b[, step]) or choice(x, y, ...)") from None
        if isinstance(value, ChoiceSweep):
            choices = [_plain(v) for v in value.list]
            space[key] = D.CategoricalDistribution(choices)
        elif isinstance(value, RangeSweep):
            start, stop, step = value.start, value.stop, value.step if value.step is not None else 1
            if any(isinstance(x, float) and not float(x).is_integer() for x in (start, stop, step)):
                raise ValueError(f"sweep.params.{key}: range() needs integers, got {expr!r}; use interval() for floats")
            start, stop, step = int(start), int(stop), int(step)
            high = start + ((stop - 1 - start) // step) * step  # Python range: stop excluded
            if high < start:
                raise ValueError(f"sweep.params.{key}: {expr!r} is empty")
            space[key] = D.IntDistribution(start, high, step=step)
        elif isinstance(value, IntervalSweep):
            log = "log" in (value.tags or set())
            if isinstance(value.start, int) and isinstance(value.end, int) and not log:
                space[key] = D.IntDistribution(value.start, value.end)
            else:
                space[key] = D.FloatDistribution(float(value.start), float(value.end), log=log)
        else:
            raise ValueError(f"sweep.params.{key}: {expr!r} is a single value, not a search space")
    if not space:
        raise ValueError("sweep.params is empty: give at least one key, e.g. "
                         "sweep.params='{agent.params.alpha: \"tag(log, interval(0.05, 5))\"}'")
    return space


def _plain(v: Any) -> Any:
    return v if isinstance(v, str | int | float | bool) or v is None else str(v)


def _override(key: str, value: Any) -> str:
    text = value if not isinstance(value, str) else f"'{value}'"
    return f"++{key}={text}"


def _run_trial(container: dict[str, Any], parent_run_id: str | None) -> dict[str, float]:
    """One trial in this or a worker process (a plain dict crosses the process boundary)."""
    from rapport.experiments import train

    register_configs()
    return train.run(OmegaConf.create(container), parent_run_id=parent_run_id)


def run_sweep(base_overrides: list[str], settings: RunConfig, *, compose_fn: Any) -> Any:
    """Run the sweep; ``compose_fn(overrides) -> DictConfig`` composes a trial's config."""
    import optuna
    from joblib import Parallel, delayed

    from rapport.experiments import train
    from rapport.experiments.tracking import (
        ensure_experiment,
        finish_parent_with_leaderboard,
        git_info,
        resolve_tracking_uri,
    )

    sw = settings.sweep
    with user_input():
        space = search_space(dict(sw.params))
    keep = [o for o in base_overrides if not o.lstrip("+~").startswith(("sweep.", "label="))]

    def trial_config(values: dict[str, Any], number: int) -> DictConfig:
        label = f"{settings.agent.name if settings.agent else 'trial'}-trial{number}"
        return compose_fn(keep + [_override(k, v) for k, v in values.items()] + [f"++label={label}"])

    # validate every key and the value types before any work: one config per distribution end
    for probe in ({k: (d.low if hasattr(d, "low") else d.choices[0]) for k, d in space.items()},
                  {k: (d.high if hasattr(d, "high") else d.choices[-1]) for k, d in space.items()}):
        with user_input(f"sweep.params at {probe}: "):
            train.validate(trial_config(probe, 0))

    sampler = (optuna.samplers.TPESampler(seed=settings.seed) if sw.sampler == "tpe"
               else optuna.samplers.RandomSampler(seed=settings.seed))
    study = optuna.create_study(direction=sw.direction, sampler=sampler, storage=sw.storage,
                                study_name=settings.tracking.experiment, load_if_exists=sw.storage is not None)
    parent_id = uri = None
    if settings.tracking.backend == "mlflow":
        from mlflow.tracking import MlflowClient

        uri = resolve_tracking_uri(settings.tracking.uri)
        exp_id = ensure_experiment(uri, settings.tracking.experiment)  # once, before parallel jobs
        parent = MlflowClient(uri).create_run(exp_id, run_name=f"{settings.tracking.experiment}-sweep", tags={
            **git_info(), "rapport.command": "sweep", "rapport.role": "parent",
            "rapport.overrides": " ".join(base_overrides)[:5000],
            "rapport.search_space": str(dict(sw.params))[:5000]})
        parent_id = parent.info.run_id
    try:
        done = 0
        while done < sw.n_trials:
            batch = [study.ask(space) for _ in range(min(sw.n_jobs, sw.n_trials - done))]
            configs = [OmegaConf.to_container(trial_config(t.params, t.number), resolve=True) for t in batch]
            if len(batch) == 1:
                results = [_safe(_run_trial, configs[0], parent_id)]
            else:
                results = Parallel(n_jobs=len(batch), backend="loky")(
                    delayed(_safe)(_run_trial, c, parent_id) for c in configs)
            for trial, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    print(f"[rapport] trial {trial.number} failed: {type(result).__name__}: {result}")
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    continue
                if sw.objective not in result:
                    raise UserError(f"sweep.objective {sw.objective!r} is not a metric of the runs; "
                                     f"some valid ones: {sorted(k for k in result if '/ci_' not in k)[:30]}")
                study.tell(trial, result[sw.objective])
            done += len(batch)
    except BaseException:
        if parent_id is not None:
            MlflowClient(uri).set_terminated(parent_id, "FAILED")
        raise
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if parent_id is not None:
        _log_study(uri, parent_id, study, sw.objective)
        finish_parent_with_leaderboard(uri, parent_id)
    if not completed:
        raise UserError(f"every one of the {len(study.trials)} trials failed; see the messages above")
    print(f"[rapport] best {sw.objective} = {study.best_value:.4f} with {study.best_params}")
    return study


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as err:  # reported per trial and told to Optuna as FAIL
        return err


def _log_study(uri: str, parent_id: str, study: Any, objective: str) -> None:
    import optuna
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from rapport.experiments import plots

    client = MlflowClient(uri)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    metrics = [Metric("sweep/n_trials", len(study.trials), 0, 0),
               Metric("sweep/n_complete", len(complete), 0, 0)]
    if complete:
        metrics.append(Metric("sweep/best_value", float(study.best_value), 0, 0))
        for k, v in study.best_params.items():
            client.set_tag(parent_id, f"sweep.best.{k}", str(v))
    client.log_batch(parent_id, metrics=metrics)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trials.csv"
        study.trials_dataframe().to_csv(path, index=False)
        client.log_artifact(parent_id, str(path), "sweep")
    if complete:
        values = [t.value for t in complete]
        best = (max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min)
        running = [best(values[: i + 1]) for i in range(len(values))]
        fig = plots.learning_curve([{"step": float(t.number), objective: v} for t, v in zip(complete, values, strict=True)],
                                   objective, title=f"sweep: {objective} per trial")
        fig.axes[0].plot([t.number for t in complete], running, color="black", lw=1, label="best so far")
        fig.axes[0].set_xlabel("trial")
        client.log_figure(parent_id, fig, "sweep/optimization_history.png")
        plots.close(fig)


def main(argv: list[str] | None = None) -> None:
    """``python -m rapport.experiments.sweep [overrides]`` (Hydra app over ``conf/train.yaml``); ``argv``:
    the overrides (default: the command line). Failures print one line and exit non-zero."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    register_configs()
    config_path = CONFIG_PATH

    @hydra.main(version_base="1.3", config_path=config_path, config_name="train")
    def _app(cfg: DictConfig) -> None:
        with marks_failed_output():
            settings = to_settings(cfg)
            overrides = list(HydraConfig.get().overrides.task)
            run_sweep(overrides, settings,
                      compose_fn=lambda ov: hydra.compose(config_name="train", overrides=ov))

    run_hydra_app(_app, argv, prog="rapport.experiments.sweep")


if __name__ == "__main__":
    main()
