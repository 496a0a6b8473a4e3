"""MLflow pyfunc model (models-from-code) serving a saved Rapport policy.

Input: a DataFrame with the policy schema's feature columns (float). Output: a DataFrame with
``channel, offer, spend_level`` (int64) and ``propensity`` (float64), one row per input row.
Param ``seed`` (int, default 0) seeds the generator of stochastic policies. Logged by
:func:`rapport.experiments.policy_store.log_pyfunc_model` with the policy folder as artifact ``policy``.
"""

from __future__ import annotations

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel

from rapport.experiments.policy_store import predict_frame


class PolicyModel(PythonModel):
    """Loads the policy folder in ``load_context``; ``predict`` decides for every row."""

    def load_context(self, context):
        from rapport.experiments.policy_store import load_policy

        self.policy = load_policy(context.artifacts["policy"])

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        return predict_frame(self.policy, model_input, seed=int((params or {}).get("seed", 0)))


set_model(PolicyModel())
