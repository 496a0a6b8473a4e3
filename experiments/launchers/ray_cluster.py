"""Where Rapport's Ray work runs: one typed config and one way to connect.

Both users of Ray — the Hydra launcher (``hydra/launcher=ray``, a sweep's jobs as Ray tasks) and
sharded evaluation (:mod:`rapport.experiments.sharding`, a population's shards as Ray actors) — connect
through :func:`init_ray`, so ``address``, the temp dir and the loopback rule mean the same thing
in both.

``address``:

* ``None`` — start a private single-machine Ray inside this process (``num_cpus`` CPUs, temp
  files under ``tmpdir``), stopped when the work is done.
* ``"auto"`` — the cluster that ``ray start --head`` left on this machine (its address is read
  from ``<tmpdir or $RAY_TMPDIR or /tmp>/ray/ray_current_cluster``; ``$RAY_ADDRESS`` wins).
* ``"host:port"`` — the head node's GCS address of an existing cluster (``ray start --head
  --port=6379`` → ``"<head ip>:6379"``).
* ``"ray://host:10001"`` — Ray Client, for a driver outside the cluster's network.

Loopback. On Linux Ray rewrites ``127.0.0.1``/``localhost`` to the machine's interface address
(it is built for multi-machine clusters), so ``ray start --head --node-ip-address=127.0.0.1``
still listens on every interface and registers the node as e.g. ``192.0.2.2``. Ray keeps
loopback only when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is in the environment of ``ray
start`` *and* of the driver (read when ``ray`` is imported). :func:`init_ray` sets it for a
private Ray and for a loopback address (``loopback=None`` = decide from the address); a
single-machine cluster started that way has every server on ``127.0.0.1`` but cannot take
worker nodes from other machines (Ray refuses ``ray start --address`` in that mode) — use the
machine's real address for a multi-node cluster.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_ENV = "RAY_AUTH_MODE"
"""Set to ``0``, Ray keeps 127.0.0.1 instead of rewriting it to the interface address."""
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class RayConfig:
    """How to reach Ray (the ``ray`` node of the launcher config, and sharded evaluation)."""

    address: str | None = None
    """``None`` (private local Ray), ``"auto"``, ``"host:port"`` or ``"ray://host:port"`` (above)."""
    num_cpus: int | None = None
    """CPUs of a private local Ray (``address: null``); ignored when connecting to a cluster."""
    tmpdir: str | None = None
    """Ray's temp/session directory (``RAY_TMPDIR``): where a private Ray keeps its sockets and
    logs and where ``address: auto`` looks for the running cluster. Keep it short: Ray's unix
    sockets live under it and socket paths are limited to ~107 characters."""
    namespace: str | None = None
    """Ray namespace of the driver (named actors are per namespace)."""
    runtime_env: dict[str, Any] = field(default_factory=dict)
    """Ray runtime environment for the driver's tasks, e.g. ``{"working_dir": "."}`` on a cluster
    whose nodes do not share this file system (see Ray's "Runtime environments")."""
    loopback: bool | None = None
    """Keep every Ray address on 127.0.0.1; ``None``: yes for a private Ray or a loopback
    ``address``, no otherwise."""
    log_to_driver: bool = True
    """Stream workers' stdout/stderr to the driver's console."""

    def __post_init__(self) -> None:
        if self.address is not None and (not isinstance(self.address, str) or not self.address.strip()):
            raise ValueError(f"ray.address must be null, 'auto', 'host:port' or 'ray://host:port', "
                             f"got {self.address!r}")
        if self.num_cpus is not None and (isinstance(self.num_cpus, bool) or not isinstance(self.num_cpus, int)
                                          or self.num_cpus < 1):
            raise ValueError(f"ray.num_cpus must be null or an integer >= 1, got {self.num_cpus!r}")
        if self.address is not None and self.address != "auto" and not self.address.startswith("ray://") \
                and ":" not in self.address:
            raise ValueError(f"ray.address {self.address!r} has no port: use 'host:port' (the head's "
                             "GCS port, `ray start --head --port`), 'auto' or 'ray://host:port'")

    @classmethod
    def from_mapping(cls, node: Any) -> RayConfig:
        """From a dict / DictConfig / RayConfig; unknown keys are errors that list the valid ones."""
        if isinstance(node, RayConfig):
            return node
        if node is None:
            return cls()
        items = dict(node.items())
        valid = set(cls.__dataclass_fields__)
        unknown = sorted(set(items) - valid)
        if unknown:
            raise ValueError(f"unknown ray option(s) {unknown}; valid: {', '.join(sorted(valid))}")
        if items.get("runtime_env") is not None:
            items["runtime_env"] = _plain(items["runtime_env"])
        else:
            items.pop("runtime_env", None)
        return cls(**items)


def _plain(node: Any) -> Any:
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(node, DictConfig | ListConfig):
            return OmegaConf.to_container(node, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf ships with hydra, a dependency
        pass
    return dict(node)


def temp_root(cfg: RayConfig) -> Path:
    """Directory under which Ray keeps ``ray/`` (sessions, address file)."""
    return Path(cfg.tmpdir or os.environ.get("RAY_TMPDIR") or "/tmp")


def resolve_address(cfg: RayConfig) -> str | None:
    """The concrete address :func:`init_ray` connects to (``"auto"`` looked up), or None."""
    if cfg.address != "auto":
        return cfg.address
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"]
    address_file = temp_root(cfg) / "ray" / "ray_current_cluster"
    if not address_file.is_file():
        raise ConnectionError(
            f"ray.address=auto: no running cluster found ({address_file} does not exist). Start one "
            "with `ray start --head` using the same RAY_TMPDIR (ray.tmpdir), or give ray.address "
            "as 'host:port'.")
    return address_file.read_text().strip()


def is_loopback(address: str | None) -> bool:
    if address is None:
        return True
    host = address.removeprefix("ray://").rsplit(":", 1)[0].strip("[]")
    return host in LOOPBACK_HOSTS


def _prepare_loopback(wanted: bool) -> None:
    """Make Ray keep 127.0.0.1 (must happen before ``import ray`` in this process)."""
    if not wanted:
        return
    if "ray" in sys.modules:
        constants = sys.modules.get("ray._private.ray_constants")
        if getattr(constants, "ENABLE_RAY_CLUSTER", False):
            raise RuntimeError(
                f"ray was imported before {LOOPBACK_ENV}=0 was set, so it will rewrite 127.0.0.1 to "
                f"this machine's interface address; set {LOOPBACK_ENV}=0 in the environment before "
                "Python starts (or before `import ray`), or pass ray.loopback=false and a "
                "non-loopback address")
    os.environ[LOOPBACK_ENV] = "0"
    # A loopback cluster is private to this machine. Ray 2.5x+ turns token authentication on for
    # some start paths (and writes ~/.ray/auth_token) but not others, so a head and a driver can
    # disagree and the driver is refused; pin one mode for both unless the user chose one.
    os.environ.setdefault(AUTH_ENV, "disabled")


def init_ray(cfg: RayConfig | None = None) -> bool:
    """Connect this process to Ray as ``cfg`` says. Returns True if it started a Ray session
    (the caller then owns it and calls :func:`shutdown_ray`), False if one was already running."""
    cfg = cfg or RayConfig()
    address = resolve_address(cfg)
    loopback = is_loopback(address) if cfg.loopback is None else cfg.loopback
    _prepare_loopback(loopback)
    if cfg.tmpdir:
        os.environ["RAY_TMPDIR"] = str(cfg.tmpdir)
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"log_to_driver": cfg.log_to_driver, "namespace": cfg.namespace}
    if cfg.runtime_env:
        kwargs["runtime_env"] = cfg.runtime_env
    if address is None:
        kwargs.update(num_cpus=cfg.num_cpus, include_dashboard=False)  # temp dir: $RAY_TMPDIR
    else:
        kwargs["address"] = address
    global _SIGTERM_BEFORE_INIT
    _SIGTERM_BEFORE_INIT = signal.getsignal(signal.SIGTERM)
    ray.init(**kwargs)
    return True


_SIGTERM_BEFORE_INIT: Any = None


def shutdown_ray() -> None:
    """``ray.shutdown()``, then give SIGTERM back to the handler it had before :func:`init_ray`
    (``ray.init`` installs one that exits the process, which would outlive the session)."""
    import ray

    ray.shutdown()
    global _SIGTERM_BEFORE_INIT
    if _SIGTERM_BEFORE_INIT is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _SIGTERM_BEFORE_INIT)
    _SIGTERM_BEFORE_INIT = None


def node_addresses() -> list[str]:
    """Addresses of the alive nodes of the connected cluster (e.g. to check loopback)."""
    import ray

    return sorted({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")})


class LocalCluster:
    """A single-machine Ray cluster on 127.0.0.1, started with ``ray start --head`` (for tests and
    benchmarks; a real cluster is started by its operator).

    It runs in a new process session, so :meth:`stop` can end exactly its processes (the GCS,
    raylet, agents and workers share the process group ``ray start`` created; ``ray stop`` would
    end every Ray process on the machine). ``env`` is the environment a driver or a
    ``rapport-train`` subprocess needs to reach it (``RAY_TMPDIR`` and the loopback switch).
    """

    def __init__(self, num_cpus: int = 2, tmpdir: str | None = None, ray_bin: str | None = None):
        import tempfile

        self.num_cpus = num_cpus
        self.tmpdir = tmpdir or tempfile.mkdtemp(prefix="rr", dir="/tmp")  # short socket paths
        self.ray_bin = ray_bin or str(Path(sys.executable).parent / "ray")
        self.address: str | None = None
        self.pgid: int | None = None
        self.env = {AUTH_ENV: "disabled", **os.environ, LOOPBACK_ENV: "0", "RAY_TMPDIR": self.tmpdir}
        self.start_log = ""

    def start(self) -> LocalCluster:
        import socket
        import subprocess

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [self.ray_bin, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
               f"--num-cpus={self.num_cpus}", "--include-dashboard=false", "--disable-usage-stats"]
        proc = subprocess.Popen(cmd, env=self.env, start_new_session=True, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self.pgid = proc.pid  # session leader: its group holds every daemon it spawns
        self.start_log, _ = proc.communicate(timeout=180)
        if proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"`{' '.join(cmd)}` failed:\n{self.start_log}")
        self.address = f"127.0.0.1:{port}"
        return self

    def recorded_address(self) -> str:
        """What the cluster wrote for ``address=auto`` (127.0.0.1:<port> in loopback mode)."""
        return (Path(self.tmpdir) / "ray" / "ray_current_cluster").read_text().strip()

    def live_processes(self) -> list[int]:
        """Processes of the cluster that have not exited (zombies excluded)."""
        if self.pgid is None:
            return []
        members = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
        return members

    def stop(self, grace_s: float = 3.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s`` (the GCS ignores SIGTERM for ~10 s)."""
        import shutil
        import signal
        import time

        if self.pgid is not None:
            for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
                if not self.live_processes():
                    break
                try:
                    os.killpg(self.pgid, sig)
                except ProcessLookupError:
                    break
                deadline = time.time() + wait
                while self.live_processes() and time.time() < deadline:
                    time.sleep(0.2)
            if self.live_processes():
                raise RuntimeError(f"Ray processes {self.live_processes()} survived SIGKILL")
            self.pgid = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
