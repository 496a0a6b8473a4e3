"""MLflow "models from code" definition of a Rapport policy (shipped inside the MLflow model).

MLflow stores this file with the model and runs it at load time, next to
``decision_runtime.py`` (a code path), so loading and serving need mlflow, pydantic, numpy and
onnxruntime -- not torch, not Rapport. The model's artifact ``onnx`` is the exported decision;
its feature names come from the model config.

Input: customers as records (a list of dicts, or a DataFrame, which MLflow turns into records),
each with every feature as a finite number and optionally ``customer_id``, ``episode`` and
``week``.
MLflow validates every record against :class:`Customer` (pydantic, strict, extra fields
forbidden) before :meth:`RapportPolicyModel.predict` runs, so a missing, extra, non-numeric or
NaN field is rejected with its name (HTTP 400 from ``mlflow models serve``), and the batch is
scored whole or not at all. Output: one :class:`Decision` per customer, in input order.
``params={"seed": s}`` drives exploration in ``explore`` exports (-1: fresh entropy); greedy
exports ignore it.
"""

import operator

import mlflow
import numpy as np
import pydantic
from mlflow.exceptions import MlflowException
from mlflow.models import ModelConfig
from mlflow.pyfunc import PythonModel

try:  # inside a logged model: decision_runtime.py is on sys.path as a code path
    from decision_runtime import DecisionRunner, InvalidDecisionInput
except ImportError:  # pragma: no cover - when loaded from a Rapport checkout
    from rapport.experiments.export.decision_runtime import DecisionRunner, InvalidDecisionInput

FEATURE_NAMES: tuple[str, ...] = tuple(
    ModelConfig(development_config={"feature_names": []}).get("feature_names"))
FiniteFloat = pydantic.confloat(allow_inf_nan=False)

Customer = pydantic.create_model(
    "Customer",
    __config__=pydantic.ConfigDict(extra="forbid"),
    customer_id=(int | None, None),
    episode=(int | None, None),
    week=(int | None, None),
    **{name: (FiniteFloat, ...) for name in FEATURE_NAMES},
)
"""One customer's observable features (names and order: the exported policy's)."""


class Decision(pydantic.BaseModel):
    """The decision for one customer: action indices and the probability it was chosen with."""

    customer_id: int | None = None
    episode: int | None = None
    week: int | None = None
    channel: int
    offer: int
    spend_level: int
    propensity: float


class RapportPolicyModel(PythonModel):
    """Pyfunc wrapper: records -> feature matrix -> ONNX decision -> records."""

    def load_context(self, context):
        self.runner = DecisionRunner(context.artifacts["onnx"])
        if self.runner.feature_names != FEATURE_NAMES:
            raise MlflowException(
                f"model config features {FEATURE_NAMES} differ from the ONNX policy's "
                f"{self.runner.feature_names}")

    def predict(self, context, model_input: list[Customer], params=None) -> list[Decision]:
        if len(model_input) == 0:
            raise MlflowException.invalid_parameter_value(
                "empty batch: no customer records to score (each record needs "
                f"{', '.join(FEATURE_NAMES)})")
        row = operator.attrgetter(*FEATURE_NAMES)
        features = np.array([row(c) for c in model_input], np.float32).reshape(
            len(model_input), len(FEATURE_NAMES))
        seed = (params or {}).get("seed", -1)
        rng = np.random.default_rng(None if seed is None or int(seed) < 0 else int(seed))
        try:
            actions, propensity = self.runner.decide(features, rng)
        except InvalidDecisionInput as err:  # e.g. a value that overflows float32
            raise MlflowException.invalid_parameter_value(str(err)) from err
        return [Decision(customer_id=c.customer_id, episode=c.episode, week=c.week, channel=a[0],
                         offer=a[1], spend_level=a[2], propensity=p)
                for c, a, p in zip(model_input, actions.tolist(), propensity.tolist(),
                                   strict=True)]


mlflow.models.set_model(RapportPolicyModel())
