"""Rapport's world: a simulated customer population as Gymnasium environments.

``import envs`` registers ``Rapport/Population-v0`` (natively batched ``VectorEnv``, one row per
customer, via ``gymnasium.make_vec``) and ``Rapport/Customer-v0`` (one customer, via
``gymnasium.make``). Both run the same transition (:func:`rapport.envs.dynamics.transition`).
"""

import gymnasium

from rapport.envs.creative import CreativeModel, load_catalogue, write_catalogue
from rapport.envs.customer_env import CustomerEnv
from rapport.envs.observation import FEATURE_NAMES, STAGES
from rapport.envs.population_env import PopulationEnv
from rapport.envs.scenario import CHANNELS, PRESETS, Scenario, get_scenario, load_scenario

POPULATION_ID = "Rapport/Population-v0"
CUSTOMER_ID = "Rapport/Customer-v0"


def _register() -> None:
    if POPULATION_ID not in gymnasium.registry:
        gymnasium.register(
            id=POPULATION_ID,
            entry_point="rapport.envs.customer_env:CustomerEnv",
            vector_entry_point="rapport.envs.population_env:PopulationEnv",
        )
    if CUSTOMER_ID not in gymnasium.registry:
        gymnasium.register(id=CUSTOMER_ID, entry_point="rapport.envs.customer_env:CustomerEnv")


_register()

__all__ = [
    "CHANNELS", "CUSTOMER_ID", "CreativeModel", "CustomerEnv", "FEATURE_NAMES", "POPULATION_ID", "PRESETS",
    "PopulationEnv", "STAGES", "Scenario", "get_scenario", "load_catalogue", "load_scenario",
    "write_catalogue",
]
