"""The launcher class and its structured config (``hydra/launcher=rapport_ray``).

``conf/hydra/launcher/ray.yaml`` selects this config (``hydra/launcher=ray``) and documents it.
Importing this module is cheap: Hydra imports every plugin module at start-up, so Ray is only
imported when a sweep is launched. No ``from __future__ import annotations`` here: Hydra's plugin
scan executes the module outside ``sys.modules``, where dataclasses cannot resolve string
annotations (the scan, and with it every Hydra app, would fail).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from rapport.experiments.launchers.ray_cluster import RayConfig


@dataclass
class RayLauncherConf:
    """``hydra.launcher`` when ``hydra/launcher=ray``."""

    _target_: str = "hydra_plugins.rapport_ray_launcher.ray_launcher.RayLauncher"
    ray: RayConfig = field(default_factory=RayConfig)
    """Where the jobs run (``rapport.experiments.launchers.ray_cluster.RayConfig``)."""
    num_cpus_per_job: float = 1.0
    """CPUs Ray reserves for each job (jobs run concurrently as far as the cluster's CPUs allow)."""
    num_gpus_per_job: float = 0.0
    """GPUs Ray reserves for each job."""
    max_retries: int = 0
    """Re-runs of a job whose worker process died (a job that raises is reported, not retried)."""
    max_calls: int = 0
    """Jobs a worker process runs before Ray replaces it; 0: no limit (workers are reused, so
    imports are paid once); 1: a fresh process per job (full isolation)."""
    forward_env: list[str] = field(default_factory=lambda: ["MLFLOW_*", "RAPPORT_*", "CI"])
    """Driver environment variables (fnmatch patterns) set in each job: Ray's workers are started
    by the cluster, not by this process, so e.g. ``MLFLOW_TRACKING_URI`` must be forwarded."""
    chdir_to_driver_cwd: bool = True
    """Run each job in the driver's working directory when it exists on the job's node (a local
    cluster or a shared file system), so relative paths mean the same as in a local run."""
    summary_file: str = "ray_launcher_summary.json"
    """Per-job status, node, duration and error of the sweep, written in the sweep directory."""


ConfigStore.instance().store(group="hydra/launcher", name="rapport_ray", node=RayLauncherConf,
                             provider="rapport_ray_launcher")


class RayLauncher(Launcher):
    """Runs each job of a Hydra multirun as a Ray task; one job's failure does not stop the others."""

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.rapport_ray_launcher import _core

        return _core.launch(self, job_overrides, initial_job_idx)
