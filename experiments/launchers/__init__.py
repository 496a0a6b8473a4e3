"""Running Rapport's work on Ray.

* :mod:`rapport.experiments.launchers.ray_cluster` — the ``ray`` config node and :func:`init_ray`.
* ``experiments/launchers/hydra_plugins/rapport_ray_launcher`` — the Hydra launcher plugin
  (``hydra/launcher=ray``); it installs as the ``hydra_plugins.rapport_ray_launcher`` package,
  since Hydra discovers plugins only in the ``hydra_plugins`` namespace.
"""
