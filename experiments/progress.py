"""Progress bars for long work (training, evaluation) that stay quiet in CI."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

_TRUE = ("1", "true", "yes", "on")


def progress_enabled(requested: bool = True) -> bool:
    """Bars only when asked for, not under ``CI=true`` (or ``RAPPORT_NO_PROGRESS=1``)."""
    if os.environ.get("CI", "").strip().lower() in _TRUE:
        return False
    if os.environ.get("RAPPORT_NO_PROGRESS", "").strip().lower() in _TRUE:
        return False
    return bool(requested)


def bar(total: int | None = None, *, desc: str = "", enabled: bool = True, unit: str = "it",
        **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, disabled (a no-op object) when progress is off."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not progress_enabled(enabled),
                file=sys.stderr, dynamic_ncols=True, leave=False, **kwargs)
