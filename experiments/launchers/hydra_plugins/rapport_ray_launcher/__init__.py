"""Rapport's Hydra launcher on Ray: ``hydra/launcher=ray`` runs a multirun's jobs as Ray tasks.

Installed from ``experiments/launchers/hydra_plugins/`` as ``hydra_plugins.rapport_ray_launcher``
(Hydra discovers plugins only in the ``hydra_plugins`` namespace). Written on Ray's public API
because ``hydra-ray-launcher`` pins ``cloudpickle<3``, which conflicts with ``joblib>=1.6``.
"""

__version__ = "0.1.0"
