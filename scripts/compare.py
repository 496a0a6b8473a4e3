"""Leaderboard of an MLflow experiment's runs; the same as the ``rapport-compare`` console script.

    python scripts/compare.py --experiment demo
    python scripts/compare.py --experiment baselines --metric kpi/lifetime_value_per_customer --out results/
"""

from rapport.experiments.compare import main

if __name__ == "__main__":
    main()
