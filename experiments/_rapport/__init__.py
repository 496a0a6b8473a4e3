"""Rapport: a research framework for personalized marketing with reinforcement learning.

One import namespace over the repository's top-level folders (``pyproject.toml`` maps them):

* :mod:`rapport.envs` — the simulated customer population as Gymnasium environments;
* :mod:`rapport.agents` — baselines, contextual bandits, RL adapters, off-policy evaluation;
* :mod:`rapport.experiments` — Hydra apps tracked in MLflow, export, sharded evaluation;
* ``rapport.conf`` — the Hydra YAML (``pkg://rapport.conf``).

``import rapport`` registers the Gymnasium ids ``Rapport/Population-v0`` (``gymnasium.make_vec``)
and ``Rapport/Customer-v0`` (``gymnasium.make``).
"""

from importlib.metadata import PackageNotFoundError, version

import rapport.envs  # noqa: F401  (registers the Gymnasium ids)

try:
    __version__ = version("rapport-rl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
