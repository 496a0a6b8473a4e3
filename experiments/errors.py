"""How Rapport's command-line apps fail: one clear line on stderr, a non-zero exit, no result
that looks finished.

Every ``rapport-*`` app's ``main(argv)`` hands its ``@hydra.main`` function to
:func:`run_hydra_app`, which turns any failure into one line naming what was wrong::

    error: evaluation.blocks=100000 exceeds env.customers=300 (every block needs a customer); valid: 1..300
    error: env.bogus: no such key; valid keys of env: scenario, overrides, customers, horizon

and exits with :data:`EXIT_INPUT` (2) for bad input (a config key or value, a file, a policy),
:data:`EXIT_INTERNAL` (1) for anything else (a bug: the line says so), 130 on Ctrl-C and 143 on
SIGTERM (the MLflow run is then KILLED or FAILED, see :func:`rapport.experiments.tracking.start_run`).
``HYDRA_FULL_ERROR=1`` -- Hydra's own switch -- prints the full traceback instead, and the
traceback of a failed job is always written to ``FAILED`` in its Hydra output folder
(:func:`mark_failed_output`), so an ``outputs/`` folder never looks like a finished run.

Bad input is raised as :class:`UserError` (a ``ValueError``) by the apps' validation; a
``ValueError`` raised while validating is turned into one by :func:`user_input`, so that a
``ValueError`` deep inside the work still reads as the bug it is.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["EXIT_INPUT", "EXIT_INTERNAL", "UserError", "check_writable", "describe", "full_error_requested",
           "mark_failed_output", "model_folder", "run_hydra_app", "staged_file", "user_input"]

EXIT_INPUT = 2
"""Exit status for bad input: a config key or value, an input file, a policy folder."""
EXIT_INTERNAL = 1
"""Exit status for everything else (the message calls it an internal error)."""
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
FAILED_MARKER = "FAILED"
"""File written into a failed job's Hydra output folder: the error line and its traceback."""
_HYDRA_JOB_ERROR = "Error executing job with overrides:"
_OMEGACONF_CONTEXT = ("full_key:", "reference_type=", "object_type=")
_HYDRA_NOISE = ("Config search path", "See https://hydra.cc")


class UserError(ValueError):
    """Bad input. The message names the key, field or file and says what is valid; the apps
    print it as one line and exit with :data:`EXIT_INPUT`."""


@contextmanager
def user_input(prefix: str = "") -> Iterator[None]:
    """Validation scope: a ``ValueError`` or ``TypeError`` raised inside is bad input and is
    re-raised as :class:`UserError` (``prefix`` prepended to its message)."""
    from omegaconf.errors import OmegaConfBaseException

    try:
        yield
    except UserError:
        raise
    except (ValueError, TypeError, OmegaConfBaseException) as err:
        raise UserError(prefix + (_omegaconf_message(err) or _one_line(str(err)))) from err


def full_error_requested() -> bool:
    """``HYDRA_FULL_ERROR=1`` (Hydra's switch): show tracebacks instead of one line."""
    return os.environ.get("HYDRA_FULL_ERROR", "") not in ("", "0")


# ------------------------------------------------------------------------------ formatting
def _one_line(text: str) -> str:
    """Hydra's and MLflow's multi-line messages as one line: ``header: a, b, c; next``."""
    parts: list[str] = []
    items: list[str] = []
    for raw in str(text).splitlines():
        line = raw.strip()
        if not line:
            continue
        if raw[:1] in ("\t", " ") and parts and parts[-1].endswith(":"):
            items.append(line)  # an indented list under "Available options in 'agent':"
            continue
        if items:
            parts[-1] += " " + ", ".join(items)
            items = []
        parts.append(line)
    if items:
        parts[-1] += " " + ", ".join(items)
    return "; ".join(p.rstrip(".") if i < len(parts) - 1 else p for i, p in enumerate(parts))


def _valid_keys(object_type: Any) -> list[str]:
    if isinstance(object_type, type) and dataclasses.is_dataclass(object_type):
        return [f.name for f in dataclasses.fields(object_type)]
    return []


def _omegaconf_message(err: BaseException) -> str | None:
    """``<full key>: <what is wrong>[; valid keys of <parent>: ...]`` for an OmegaConf error."""
    try:
        from omegaconf.errors import ConfigKeyError, OmegaConfBaseException
    except ImportError:  # pragma: no cover - omegaconf is a dependency of hydra-core
        return None
    if not isinstance(err, OmegaConfBaseException):
        return None
    key = getattr(err, "full_key", None) or getattr(err, "key", None)
    text = getattr(err, "msg", None) or str(err)
    msg = _one_line("\n".join(line for line in str(text).splitlines()
                              if not line.strip().startswith(_OMEGACONF_CONTEXT)))
    is_key_error = isinstance(err, ConfigKeyError) or type(err).__name__ == "ConfigAttributeError"
    if is_key_error and key:
        parent = str(key).rsplit(".", 1)[0] if "." in str(key) else "the root config"
        valid = _valid_keys(getattr(err, "object_type", None))
        line = f"{key}: no such key"
        return line + (f"; valid keys of {parent}: {', '.join(valid)}" if valid else f" ({msg})")
    return f"{key}: {msg}" if key else msg


def describe(err: BaseException) -> tuple[int, str]:
    """(exit status, the one line without the ``error:`` prefix) for any failure."""
    name = type(err).__name__
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted (Ctrl-C); a tracked run ends KILLED"
    if name == "_Terminated":  # rapport.experiments.tracking turns SIGTERM into this exception
        return EXIT_TERMINATED, f"{err}; a tracked run ends FAILED"
    if isinstance(err, UserError):
        return EXIT_INPUT, _one_line(str(err))
    try:
        from hydra.errors import HydraException
    except ImportError:  # pragma: no cover
        HydraException = ()  # type: ignore[assignment]  # noqa: N806
    if isinstance(err, HydraException):
        head = "; ".join(p for p in _one_line(str(err)).split("; ") if not p.startswith(_HYDRA_NOISE))
        cause = err.__cause__
        detail = _omegaconf_message(cause) if cause is not None else None
        if detail is None and cause is not None:  # e.g. instantiate(): the import that failed
            head = head.replace(", set env var HYDRA_FULL_ERROR=1 to see chained exception", "")
            return EXIT_INPUT, f"{head} ({type(cause).__name__}: {_one_line(str(cause))})"
        if detail is None:
            return EXIT_INPUT, head
        if _valid_keys(getattr(cause, "object_type", None)) and "no such key" in detail:
            return EXIT_INPUT, detail  # Hydra's "use +key=value to append" is wrong for typed configs
        return EXIT_INPUT, f"{detail} ({head})"
    om = _omegaconf_message(err)
    if om is not None:
        return EXIT_INPUT, om
    if isinstance(err, OSError):
        return EXIT_INPUT, _one_line(str(err))
    return EXIT_INTERNAL, (f"internal error: {name}: {_one_line(str(err))} (a bug in Rapport; "
                           "HYDRA_FULL_ERROR=1 prints the traceback)")


# ------------------------------------------------------------------------ partial output
def mark_failed_output(err: BaseException) -> Path | None:
    """Write ``FAILED`` (the error line and the traceback) into the running Hydra job's output
    folder, so the folder never looks like a finished run; returns its path."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        folder = Path(HydraConfig.get().runtime.output_dir)
    except Exception:  # no Hydra job around this call
        return None
    _, line = describe(err)
    text = f"error: {line}\n\n" + "".join(traceback.format_exception(type(err), err, err.__traceback__))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / FAILED_MARKER).write_text(text)
    except OSError:
        return None
    return folder / FAILED_MARKER


@contextmanager
def marks_failed_output() -> Iterator[None]:
    """Around a Hydra task function's body: on any failure write ``FAILED`` (see
    :func:`mark_failed_output`) and re-raise."""
    try:
        yield
    except BaseException as err:
        mark_failed_output(err)
        raise


def check_writable(what: str, path: str | Path, *, folder: bool = False) -> Path:
    """Raise :class:`UserError` unless ``path`` (a file, or a folder with ``folder=True``) can be
    written: its nearest existing ancestor is a writable folder. Creates nothing."""
    path = Path(path).expanduser()
    if path.exists() and path.is_dir() != folder:
        kind = "a folder" if path.is_dir() else "a file"
        raise UserError(f"{what}={str(path)!r} is {kind}; give the {'folder' if folder else 'file'} to write")
    ancestor = path if path.exists() else path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{what}={str(path)!r} cannot be written: {str(ancestor)!r} is not a writable folder")
    return path


POLICY_SOURCES = "a run id, runs:/<run_id>/policy, models:/<name>/<version> or an MLflow model folder"


def model_folder(what: str, entry: str) -> Path | None:
    """The local folder ``entry`` names when it looks like a path (not a ``scheme:/`` URI nor a
    bare name), checked to be an MLflow model folder (one with an ``MLmodel`` file); raises
    :class:`UserError` naming ``what`` when it is missing, empty or something else."""
    path = Path(entry).expanduser()
    if ":/" in entry or not (path.exists() or "/" in entry or entry.startswith(".")):
        return None
    if not path.exists():
        raise UserError(f"{what} {entry!r}: no such folder; give {POLICY_SOURCES}")
    if not path.is_dir() or not (path / "MLmodel").is_file():
        kind = ("a file" if not path.is_dir() else "an empty folder" if not any(path.iterdir())
                else "a folder without an MLmodel file")
        raise UserError(f"{what} {entry!r} is not a policy folder: it is {kind}; give {POLICY_SOURCES}")
    return path


@contextmanager
def staged_file(final: str | Path) -> Iterator[Path]:
    """A path to write ``final`` to under its own name in a hidden staging folder beside it,
    moved into place only when the block succeeds: a failed run never leaves a file that looks
    complete (nor replaces a good one). Unwritable targets raise :class:`UserError`."""
    import shutil
    import tempfile

    final = Path(final)
    parent = final.parent if str(final.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=parent))
    except OSError as err:
        raise UserError(f"cannot write {str(final)!r}: {err.strerror or err} "
                        f"(its folder {str(parent)!r} must be writable)") from err
    try:
        yield staging / final.name
        os.replace(staging / final.name, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ------------------------------------------------------------------------------- the apps
class _QuietHydraJobErrors:
    """stderr proxy that drops Hydra's "Error executing job with overrides: [...]" line (our one
    line replaces it) and remembers the overrides for multiruns."""

    def __init__(self, stream: Any):
        self._stream = stream
        self.overrides: str | None = None

    def write(self, text: str) -> int:
        if text.startswith(_HYDRA_JOB_ERROR):
            if self.overrides is None:
                self.overrides = text[len(_HYDRA_JOB_ERROR):].strip()
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def run_hydra_app(app: Callable[[], Any], argv: Sequence[str] | None = None, *, prog: str) -> None:
    """Run a ``@hydra.main`` function with ``argv`` (default: the command line) and report any
    failure as one line (``error: ...``) and ``SystemExit`` with the status of :func:`describe`.
    With ``HYDRA_FULL_ERROR=1`` exceptions propagate with their traceback, as Hydra does."""
    saved_argv = sys.argv
    if argv is not None:
        sys.argv = [prog, *argv]
    full = full_error_requested()
    multirun = any(a in ("-m", "--multirun") for a in sys.argv[1:])
    saved_flag = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing a stripped traceback
    saved_stderr = sys.stderr
    quiet = _QuietHydraJobErrors(saved_stderr)
    if not full:
        sys.stderr = quiet
    try:
        app()
    except SystemExit:
        raise
    except BaseException as err:
        if full:
            raise
        code, line = describe(err)
        if multirun and quiet.overrides:
            line = f"job {quiet.overrides}: {line}"
        print(f"{prog}: error: {line}", file=saved_stderr)
        raise SystemExit(code) from None
    finally:
        sys.stderr = saved_stderr
        sys.argv = saved_argv
        if saved_flag is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved_flag
