"""Launching a multirun's jobs as Ray tasks and collecting their results one by one.

Driver side (:func:`launch`): every job's config is composed here (so worker nodes need neither
the ``conf/`` directory nor the driver's command line), the sweep directory is made absolute,
and each job goes to Ray as one task. Results are collected as they finish; a job that raised
comes back as a FAILED ``JobReturn`` and a job whose worker died (or whose result could not be
sent back) is turned into one here, so every job is accounted for and the others keep running.
The per-job outcome is logged and written to ``<sweep dir>/<summary_file>``. As with Hydra's
other launchers, Hydra's sweeper then raises the first failure once all jobs are done, so the
command exits non-zero.

Worker side (:func:`execute_job`): the forwarded environment variables are set, the working
directory is the driver's when it exists on the node, Hydra's singletons (config store, job
runtime) are restored, and ``hydra.core.utils.run_job`` runs the task function exactly as a
local launcher would (job output dir, logging, callbacks).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import socket
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from rapport.experiments.launchers.ray_cluster import RayConfig, init_ray, shutdown_ray

log = logging.getLogger(__name__)


def _picklable_error(exc: BaseException) -> BaseException:
    import cloudpickle

    try:
        cloudpickle.loads(cloudpickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def execute_job(hydra_context: HydraContext, task_function: TaskFunction, sweep_config: DictConfig,
                singleton_state: dict[Any, Any], env: dict[str, str], cwd: str | None,
                sweep_files: dict[str, bytes]) -> tuple[JobReturn, dict[str, Any]]:
    """Run one job in a Ray worker; returns its JobReturn and what the summary reports."""
    started = time.time()
    _restore_sweep_files(Path(str(sweep_config.hydra.sweep.dir)), sweep_files)
    saved_env = {k: os.environ.get(k) for k in env}
    old_cwd = os.getcwd()
    os.environ.update(env)
    if cwd and os.path.isdir(cwd):
        os.chdir(cwd)
    try:
        setup_globals()
        Singleton.set_state(singleton_state)
        HydraConfig.instance().set_config(sweep_config)
        ret = run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    finally:
        os.chdir(old_cwd)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    import ray

    info: dict[str, Any] = {"status": ret.status.name, "node": ray.util.get_node_ip_address(),
                            "host": socket.gethostname(), "pid": os.getpid(),
                            "seconds": round(time.time() - started, 3), "working_dir": ret.working_dir}
    if ret.status == JobStatus.FAILED:
        exc = ret._return_value  # the exception the task raised (JobReturn.return_value re-raises it)
        info["error"] = f"{type(exc).__name__}: {exc}"
        info["traceback"] = "".join(traceback.format_exception(exc))
        ret.return_value = _picklable_error(exc)
    return ret, info


SWEEP_FILE_LIMIT = 1 << 20
"""Files up to this size that the driver's callbacks wrote into the sweep dir before launching
(e.g. the MLflow parent-run record) travel with the jobs."""


def sweep_dir_files(sweep_dir: Path) -> dict[str, bytes]:
    """Small top-level files of the sweep dir, to recreate on nodes that do not share it."""
    return {p.name: p.read_bytes() for p in sorted(sweep_dir.iterdir())
            if p.is_file() and p.stat().st_size <= SWEEP_FILE_LIMIT}


def _restore_sweep_files(sweep_dir: Path, files: dict[str, bytes]) -> None:
    if not files or all((sweep_dir / name).is_file() for name in files):
        return  # same machine or a shared file system: nothing to do
    sweep_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if not (sweep_dir / name).is_file():
            (sweep_dir / name).write_bytes(data)


def forwarded_env(patterns: Sequence[str]) -> dict[str, str]:
    """Driver environment variables matching any of ``patterns``."""
    return {k: v for k, v in os.environ.items() if any(fnmatch.fnmatchcase(k, p) for p in patterns)}


def _failed_return(sweep_config: DictConfig, overrides: Sequence[str], exc: BaseException) -> JobReturn:
    task_cfg = sweep_config.copy()
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    ret = JobReturn(overrides=list(overrides), cfg=task_cfg, hydra_cfg=sweep_config,
                    task_name=str(sweep_config.hydra.job.name), status=JobStatus.FAILED)
    ret.return_value = exc
    return ret


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run ``job_overrides`` as Ray tasks; returns one JobReturn per job, in order."""
    setup_globals()
    config, hydra_context = launcher.config, launcher.hydra_context
    assert config is not None and launcher.task_function is not None and hydra_context is not None
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    conf = OmegaConf.to_container(config.hydra.launcher, resolve=True)
    assert isinstance(conf, dict)
    ray_cfg = RayConfig.from_mapping(conf.get("ray") or {})
    sweep_dir = Path(str(config.hydra.sweep.dir)).resolve()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    driver_cwd = str(config.hydra.runtime.cwd) if conf.get("chdir_to_driver_cwd", True) else None

    owns_ray = init_ray(ray_cfg)
    import ray

    try:
        log.info(f"Ray launcher: {len(job_overrides)} jobs on {ray_cfg.address or 'a private local Ray'} "
                 f"({ray.cluster_resources().get('CPU', 0):g} CPUs); sweep output dir: {sweep_dir}")
        remote = ray.remote(
            num_cpus=float(conf.get("num_cpus_per_job", 1.0)), num_gpus=float(conf.get("num_gpus_per_job", 0.0)),
            max_retries=int(conf.get("max_retries", 0)), max_calls=int(conf.get("max_calls", 0)))(execute_job)
        shared = (ray.put(hydra_context), ray.put(launcher.task_function), ray.put(Singleton.get_state()))
        env = forwarded_env(conf.get("forward_env") or [])
        files = sweep_dir_files(sweep_dir)
        jobs: list[dict[str, Any]] = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
                sweep_config.hydra.job.num = idx
                sweep_config.hydra.sweep.dir = str(sweep_dir)
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            ref = remote.remote(shared[0], shared[1], sweep_config, shared[2], env, driver_cwd, files)
            jobs.append({"idx": idx, "overrides": list(overrides), "config": sweep_config, "ref": ref})
        results = _collect(ray, jobs)
    finally:
        if owns_ray:
            shutdown_ray()
    _write_summary(sweep_dir / str(conf.get("summary_file") or "ray_launcher_summary.json"), jobs)
    return results


def _collect(ray: Any, jobs: list[dict[str, Any]]) -> list[JobReturn]:
    """Wait for every job, logging each as it finishes; never raises for a single job."""
    by_ref = {job["ref"]: job for job in jobs}
    pending = list(by_ref)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        job = by_ref[done[0]]
        try:
            job["return"], info = ray.get(done[0])
        except Exception as exc:  # worker died, result not picklable, task cancelled ...
            job["return"] = _failed_return(job["config"], job["overrides"], exc)
            info = {"status": "FAILED", "error": f"{type(exc).__name__}: {exc}",
                    "traceback": "".join(traceback.format_exception(exc))}
        job["info"] = info
        where = f" on {info['node']} (pid {info['pid']}) in {info['seconds']:.1f} s" if "node" in info else ""
        line = f"job #{job['idx']} {' '.join(filter_overrides(job['overrides']))}: {info['status']}{where}"
        if info["status"] == "FAILED":
            log.error(f"{line}: {info['error']}")
        else:
            log.info(line)
    failed = [j["idx"] for j in jobs if j["info"]["status"] == "FAILED"]
    log.info(f"Ray launcher: {len(jobs) - len(failed)} of {len(jobs)} jobs completed"
             + (f"; failed: {', '.join(f'#{i}' for i in failed)}" if failed else ""))
    return [j["return"] for j in jobs]


def _write_summary(path: Path, jobs: list[dict[str, Any]]) -> None:
    """Append this batch's jobs to the sweep's summary (a sweeper may launch several batches)."""
    records = json.loads(path.read_text()) if path.is_file() else []
    for job in jobs:
        records.append({"idx": job["idx"], "overrides": job["overrides"], **job["info"]})
    path.write_text(json.dumps(records, indent=2))
