"""Studies: the one-to-one marketing debate as named, versioned experiments with verdicts.

A study (``conf/study/<name>.yaml``, :mod:`~rapport.experiments.studies.spec`) names a
hypothesis, the arms it compares, the conditions it compares them in and the claims that decide
it; :func:`run_study` trains and evaluates every arm on common random numbers and judges each
claim on its paired CI (:mod:`~rapport.experiments.studies.verdict`); the report and MLflow
parent run come from :mod:`~rapport.experiments.studies.report`; ``rapport-study`` is the CLI.
"""

from rapport.experiments.studies.runner import StudyResult, run_study
from rapport.experiments.studies.spec import (
           Claim,
           Study,
           StudyError,
           load_study,
           parse_study,
           study_names,
)
from rapport.experiments.studies.verdict import (
           CONTRADICTED,
           INCONCLUSIVE,
           SUPPORTED,
           claim_verdict,
           combine,
)

__all__ = ["CONTRADICTED", "INCONCLUSIVE", "SUPPORTED", "Claim", "Study", "StudyError", "StudyResult",
           "claim_verdict", "combine", "load_study", "parse_study", "run_study", "study_names"]
