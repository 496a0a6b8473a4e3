"""Where runs are tracked: resolve the tracking URI, check it, and create the store safely.

API::

    uri = resolve_tracking_uri(cfg.uri)        # config, else $MLFLOW_TRACKING_URI, else ./mlflow.db
    check_tracking_uri(uri)                    # TrackingStoreError naming the URI if unusable
    prepare_store(uri)                         # create/migrate a local store once, race-free
    exp_id = ensure_experiment(uri, "demo")    # prepare_store, then get or create the experiment

Why a lock: MLflow creates and migrates a fresh SQLite store (alembic) the first time a
process touches it, without any inter-process lock on the tracking store. Two runs started
together on a new ``mlflow.db`` (two ``rapport-train`` commands, joblib jobs, a sweep) then run
the migration twice at once: both fail (``duplicate column name``) and the half-migrated store
can stay unreadable. :func:`ensure_experiment` therefore takes an exclusive ``fcntl.flock`` on a
lock file next to the store (``<db>.lock`` for ``sqlite:///<db>``, ``<folder>.lock`` for a
file store) while it opens the store (which creates/migrates it), then records in the lock
file the schema revision the store reached. Processes that waited find a complete store; later
ones see the recorded revision in the store itself and skip the lock (opening a store costs
~1-2 s, which must not be serialised for every job of a sweep). The lock file stays behind on
purpose (removing it would let a third process lock a different file). Remote stores
(``http(s)://``, databases on a server) are not locked here. Every process calls
:func:`prepare_store` (through :func:`ensure_experiment`) before its first other MLflow call
on the store, as :class:`rapport.experiments.tracking.MLflowTracker`, the multirun callback and the
sweep driver do.

Only local stores are checked by :func:`check_tracking_uri` (their folder must exist or be
creatable); the error names the URI and the valid forms.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rapport.experiments.errors import UserError

LOCK_TIMEOUT_S = 300.0
"""Longest wait for another process's store creation (a migration takes seconds)."""

VALID_URIS = ("sqlite:///<path>.db (a file in a writable folder, created on first use; "
              "sqlite:////abs/path.db for an absolute path), file:///<writable folder> "
              "(needs MLFLOW_ALLOW_FILE_STORE=true), http(s)://<host>:<port> (an MLflow server), "
              "or a database URL such as postgresql://…; set it with tracking.uri=… or "
              "$MLFLOW_TRACKING_URI")


class TrackingStoreError(UserError):
    """The tracking URI cannot be used (the message names it and the valid forms); bad input,
    so the apps print it as one line and exit 2 (:mod:`rapport.experiments.errors`)."""


def resolve_tracking_uri(uri: str | None = None) -> str:
    """Config URI, else ``$MLFLOW_TRACKING_URI``, else the embedded store in the working dir."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def local_store(uri: str) -> tuple[str, Path] | None:
    """``("sqlite", db file)`` or ``("file", folder)`` for a local store, None otherwise (remote
    servers, server databases, in-memory SQLite)."""
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    if scheme == "sqlite":
        rest = uri.split("://", 1)[1] if "://" in uri else ""
        rest = rest.split("?", 1)[0]
        path = rest[1:] if rest.startswith("/") else rest
        if path in ("", ":memory:"):
            return None
        return "sqlite", Path(urllib.parse.unquote(path))
    if scheme == "file":
        return "file", Path(urllib.request.url2pathname(parsed.path))
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # a plain path (or C:\… on Windows)
        return "file", Path(uri)
    return None


def check_store_exists(tracking_uri: str, looking_for: str) -> None:
    """Raise :class:`UserError` when a local tracking store (``sqlite:///file`` or ``file:``/path)
    does not exist: ``looking_for`` (a run, a model) cannot be in it, and opening it would create
    an empty store as a side effect. Servers and server databases are not checked."""
    local = local_store(str(tracking_uri))
    if local is not None and not local[1].exists():
        raise UserError(f"{looking_for}: the tracking store {tracking_uri} does not exist (set "
                        "tracking.uri or $MLFLOW_TRACKING_URI to the store rapport-train wrote to)")


def _fail(uri: str, what: str, err: OSError | None = None) -> TrackingStoreError:
    reason = f" ({err.strerror or err})" if err is not None else ""
    return TrackingStoreError(f"tracking URI {uri!r}: {what}{reason}. Valid: {VALID_URIS}")


def check_tracking_uri(uri: str) -> Path | None:
    """Make sure a local store at ``uri`` can be created or opened: its folder exists (created
    here if missing) and is writable. Returns the lock file to use (None for stores not locked
    here). Raises :class:`TrackingStoreError` naming the URI."""
    if not isinstance(uri, str) or not uri.strip():
        raise TrackingStoreError(f"tracking URI {uri!r} is empty. Valid: {VALID_URIS}")
    store = local_store(uri)
    if store is None:
        return None
    kind, path = store
    path = path.expanduser()
    folder = path.parent if kind == "sqlite" else path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _fail(uri, f"cannot create the folder {str(folder)!r} for the store", err) from None
    if not folder.is_dir():
        raise _fail(uri, f"{str(folder)!r} is not a folder")
    if kind == "sqlite" and path.is_dir():
        raise _fail(uri, f"{str(path)!r} is a folder, not an SQLite database file")
    writable_target = path if (kind == "sqlite" and path.exists()) else folder
    if not os.access(writable_target, os.W_OK):
        raise _fail(uri, f"{str(writable_target)!r} is not writable")
    return path.with_name(path.name + ".lock")


@contextmanager
def store_lock(uri: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the store's inter-process lock (see the module doc); a no-op for stores that are not
    locked here and where ``fcntl`` is missing (Windows)."""
    lock_path = check_tracking_uri(uri)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: MLflow's own retries are all there is
        fcntl = None  # type: ignore[assignment]
    if lock_path is None or fcntl is None:
        yield
        return
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise _fail(uri, f"cannot create the lock file {str(lock_path)!r}", err) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() > deadline:
                    raise TimeoutError(f"tracking URI {uri!r}: another process has held the store "
                                       f"lock {str(lock_path)!r} for over {timeout:.0f} s") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _store_version(kind: str, path: Path) -> str | None:
    """What identifies a complete store: the SQLite schema revision (alembic), ``"file"`` for a
    file store with its default experiment; None when missing, unreadable or half-made."""
    if kind == "file":
        return "file" if (path / "0" / "meta.yaml").is_file() else None
    if not path.is_file() or path.stat().st_size == 0:
        return None
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                                timeout=20)) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return str(row[0]) if row else None


def _store_ready(kind: str, path: Path, lock_path: Path) -> bool:
    """The store was completed under the lock (the lock file records the revision it reached)
    and still is at that revision: no process is creating or migrating it."""
    try:
        marker = lock_path.read_text().strip()
    except OSError:
        return False
    return bool(marker) and _store_version(kind, path) == marker


def prepare_store(tracking_uri: str) -> None:
    """Create (and migrate) a local store once, under the store lock; a quick no-op when the
    store is already complete, and for remote stores. Raises :class:`TrackingStoreError` for
    an unusable URI."""
    lock_path = check_tracking_uri(tracking_uri)
    store = local_store(tracking_uri)
    if lock_path is None or store is None:
        return
    kind, path = store[0], store[1].expanduser()
    if _store_ready(kind, path, lock_path):
        return
    with store_lock(tracking_uri):
        if _store_ready(kind, path, lock_path):  # another process finished it while we waited
            return
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri).search_experiments(max_results=1)  # opens: creates, migrates
        lock_path.write_text((_store_version(kind, path) or "") + "\n")


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """Experiment id of ``name`` in the store at ``tracking_uri``, creating store (see
    :func:`prepare_store`) and experiment if needed; parallel processes on one fresh store all
    succeed."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    prepare_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    for attempt in range(5):
        try:
            exp = client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    client.restore_experiment(exp.experiment_id)
                return exp.experiment_id
            return client.create_experiment(name)
        except MlflowException:
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))  # another process created the experiment meanwhile
    raise RuntimeError("unreachable")
