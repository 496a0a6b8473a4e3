"""What a study is: a named, versioned experiment with a hypothesis, the policies (arms) it
compares, the conditions (worlds) it compares them in, the claims whose paired CIs decide it,
and the rule that turns the claims' verdicts into the study's.

Studies live as YAML in ``conf/study/<name>.yaml`` (installed as ``rapport.conf.study``)::

    name: appropriate
    version: 1
    question: Does restraint pay over a lifetime?
    hypothesis: >                      # what the study tests, in words
      ...
    base: [env=retail, env.customers=5000]   # rapport-train overrides every arm starts from
    quick: []                          # added under --quick after spec.QUICK (tests: seconds)
    conditions:                        # optional: worlds, each a list of overrides; default {main: []}
      main: []
    arms:                              # policies: name -> rapport-train overrides
      weekly: [agent=mass, agent.params.every_k_weeks=1]
      every_4w: [agent=mass, agent.params.every_k_weeks=4]
      # an arm trained in another world than the one it is evaluated in (a frozen policy):
      # frozen: {overrides: [agent=linucb_owned], train: [env.overrides.drift.rate_sigma=0]}
    baseline: weekly                   # the tables' paired differences are against this arm
    claims:                            # what decides the study
      - {policy: every_4w, versus: weekly, kpi: lifetime_value, expect: higher}
    rule: all                          # all | any
    correction: none                   # none | bonferroni (multiplicity over the study's checks)

Overrides compose in the order base, (--quick: :data:`QUICK`), condition, arm, (--quick: the
study's ``quick``), the command line's (which may not set a key an arm or condition sets); an arm's ``train`` overrides come after all of them and apply to
the world it learns in only (its evaluation world is the condition's). A claim with
no ``condition`` is checked in every condition. KPI names are glossary keys without ``kpi/``
(``lifetime_value_per_customer``) or the short names of :data:`KPI_ALIASES`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from rapport.experiments.errors import UserError
from rapport.experiments.evaluation import KPI_KEY

EXPECTATIONS = ("higher", "lower")
QUICK = ("env.customers=300", "env.horizon=8", "train.customers=200", "train.episodes=1", "train.timesteps=2048",
         "train.rollout_size=512", "evaluation.seeds=2", "evaluation.bootstrap=200", "evaluation.blocks=20",
         "evaluation.long_term_oracle=false", "progress=false")
"""What ``--quick`` adds after a study's ``base`` (an arm's own sizes still apply, and must then
agree with the other arms'), and before its conditions and arms: seconds."""
RULES = ("all", "any")
CORRECTIONS = ("none", "bonferroni")
KPI_ALIASES = {"profit": "kpi/profit_per_customer", "lifetime_value": "kpi/lifetime_value_per_customer",
               "churned": "kpi/churned_share", "opt_outs": "kpi/opt_outs_per_customer",
               "contacts": "kpi/contacts_per_customer"}
"""Short KPI names a claim may use; any glossary KPI key (with or without ``kpi/``) works too."""
_FIELDS = {"name", "version", "question", "hypothesis", "base", "quick", "conditions", "arms", "baseline",
           "claims", "rule", "notes", "correction"}
_CLAIM_FIELDS = {"policy", "versus", "kpi", "expect", "condition", "why"}


class StudyError(UserError):
    """A study that does not exist or whose spec is invalid (the message names the key)."""


def kpi_key(name: str, where: str = "kpi") -> str:
    """The glossary key (``kpi/...``) of a claim's KPI name; raises naming the valid ones."""
    if name in KPI_ALIASES:
        return KPI_ALIASES[name]
    key = name if name.startswith("kpi/") else f"kpi/{name}"
    if key not in set(KPI_KEY.values()):
        valid = sorted(KPI_ALIASES) + sorted(k.removeprefix("kpi/") for k in KPI_KEY.values())
        raise StudyError(f"{where}: unknown KPI {name!r}; valid: {', '.join(valid)}")
    return key


@dataclass(frozen=True)
class Claim:
    """``policy`` scores ``expect`` (higher/lower) than ``versus`` on ``kpi``, paired."""

    policy: str
    versus: str
    kpi: str
    expect: str
    condition: str | None = None
    why: str = ""

    @property
    def key(self) -> str:
        return kpi_key(self.kpi)

    def describe(self) -> str:
        return f"{self.policy} {self.expect} {self.kpi} than {self.versus}"


@dataclass(frozen=True)
class Study:
    name: str
    version: int
    question: str
    hypothesis: str
    arms: dict[str, tuple[str, ...]]
    baseline: str
    claims: tuple[Claim, ...]
    base: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    conditions: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"main": ()})
    rule: str = "all"
    notes: str = ""
    correction: str = "none"
    """``none``: every check at the evaluation's confidence; ``bonferroni``: with k checks, each
    at 1 − (1 − confidence)/k, so the chance of any false verdict among true nulls stays ≤ 1 − confidence."""
    train: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Per arm, overrides of the world it trains in only (absent: it trains in its evaluation world)."""

    def overrides(self, condition: str, arm: str, *, quick: bool = False,
                  extra: tuple[str, ...] | list[str] = ()) -> list[str]:
        """rapport-train overrides of ``arm`` in ``condition`` (see the module doc for the order)."""
        return [*self.base, *(QUICK if quick else ()), *self.conditions[condition], *self.arms[arm],
                *(self.quick if quick else ()), *extra]

    def train_overrides(self, condition: str, arm: str, *, quick: bool = False,
                        extra: tuple[str, ...] | list[str] = ()) -> list[str] | None:
        """Overrides of the world ``arm`` trains in, or None when it trains where it is evaluated."""
        if arm not in self.train:
            return None
        return [*self.overrides(condition, arm, quick=quick, extra=extra), *self.train[arm]]

    def claims_in(self, condition: str) -> list[Claim]:
        return [c for c in self.claims if c.condition in (None, condition)]


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StudyError(f"{where} must be a list of override strings (key=value), got {value!r}")
    for v in value:
        if "=" not in v and not v.startswith("~"):
            raise StudyError(f"{where}: override {v!r} is not key=value (or ~key)")
    return tuple(value)


def _text(value: Any, where: str, *, required: bool = True) -> str:
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise StudyError(f"{where} must be a non-empty string, got {value!r}")
    return " ".join(value.split())


def parse_study(data: Any, source: str = "<study>") -> Study:
    """Validate a study mapping (as loaded from YAML); raises :class:`StudyError` naming the key."""
    if not isinstance(data, dict):
        raise StudyError(f"{source}: a study is a mapping, got {type(data).__name__}")
    unknown = set(data) - _FIELDS
    if unknown:
        raise StudyError(f"{source}: unknown key(s) {sorted(unknown)}; valid: {sorted(_FIELDS)}")
    name = _text(data.get("name"), f"{source}: name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or ".." in name:
        raise StudyError(f"{source}: name {name!r} must be a plain name (letters, digits, _ . -): it names "
                         "the output folder and the MLflow run")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StudyError(f"{source}: version must be an integer >= 1, got {version!r}")
    arms_raw = data.get("arms")
    if isinstance(arms_raw, dict) and not all(isinstance(k, str) for k in arms_raw):
        raise StudyError(f"{source}: arm names must be strings, got {sorted(map(repr, arms_raw))}")
    if not isinstance(arms_raw, dict) or len(arms_raw) < 2:
        raise StudyError(f"{source}: arms must map at least two arm names to override lists, got {arms_raw!r}")
    arms, train = {}, {}
    for k, v in arms_raw.items():
        if isinstance(v, dict):
            bad = set(v) - {"overrides", "train"}
            if bad or "overrides" not in v:
                raise StudyError(f"{source}: arms.{k} as a mapping takes 'overrides' (required) and 'train', "
                                 f"got {sorted(v)}")
            arms[str(k)] = _strings(v["overrides"], f"{source}: arms.{k}.overrides")
            if v.get("train"):
                train[str(k)] = _strings(v["train"], f"{source}: arms.{k}.train")
        else:
            arms[str(k)] = _strings(v, f"{source}: arms.{k}")
    conds_raw = data.get("conditions") or {"main": []}
    if not isinstance(conds_raw, dict):
        raise StudyError(f"{source}: conditions must map condition names to override lists, got {conds_raw!r}")
    conditions = {str(k): _strings(v, f"{source}: conditions.{k}") for k, v in conds_raw.items()}
    baseline = data.get("baseline")
    if baseline not in arms:
        raise StudyError(f"{source}: baseline {baseline!r} is not an arm; arms: {sorted(arms)}")
    rule = data.get("rule", "all")
    if rule not in RULES:
        raise StudyError(f"{source}: rule must be one of {RULES}, got {rule!r}")
    correction = data.get("correction", "none")
    if correction not in CORRECTIONS:
        raise StudyError(f"{source}: correction must be one of {CORRECTIONS}, got {correction!r}")
    claims_raw = data.get("claims")
    if not isinstance(claims_raw, list) or not claims_raw:
        raise StudyError(f"{source}: claims must be a non-empty list")
    claims = []
    for i, c in enumerate(claims_raw):
        where = f"{source}: claims[{i}]"
        if not isinstance(c, dict):
            raise StudyError(f"{where} must be a mapping with keys {sorted(_CLAIM_FIELDS)}")
        bad = set(c) - _CLAIM_FIELDS
        if bad:
            raise StudyError(f"{where}: unknown key(s) {sorted(bad)}; valid: {sorted(_CLAIM_FIELDS)}")
        for k in ("policy", "versus"):
            if c.get(k) not in arms:
                raise StudyError(f"{where}.{k}: {c.get(k)!r} is not an arm; arms: {sorted(arms)}")
        if c["policy"] == c["versus"]:
            raise StudyError(f"{where}: policy and versus are the same arm {c['policy']!r}")
        if c.get("expect") not in EXPECTATIONS:
            raise StudyError(f"{where}.expect must be one of {EXPECTATIONS}, got {c.get('expect')!r}")
        kpi_key(str(c.get("kpi")), f"{where}.kpi")
        cond = c.get("condition")
        if cond is not None and cond not in conditions:
            raise StudyError(f"{where}.condition {cond!r} is not a condition; conditions: {sorted(conditions)}")
        claims.append(Claim(c["policy"], c["versus"], str(c["kpi"]), c["expect"], cond,
                            _text(c.get("why"), f"{where}.why", required=False)))
    return Study(name=name, version=version, question=_text(data.get("question"), f"{source}: question"),
                 hypothesis=_text(data.get("hypothesis"), f"{source}: hypothesis"), arms=arms,
                 baseline=baseline, claims=tuple(claims), base=_strings(data.get("base"), f"{source}: base"),
                 quick=_strings(data.get("quick"), f"{source}: quick"), conditions=conditions, rule=rule, correction=correction,
                 notes=_text(data.get("notes"), f"{source}: notes", required=False), train=train)


def _study_dir() -> Path:
    return Path(str(resources.files("rapport.conf") / "study"))


def study_names() -> list[str]:
    """The studies shipped in ``conf/study/``, sorted."""
    return sorted(p.stem for p in _study_dir().glob("*.yaml"))


def load_study(name_or_path: str | Path) -> Study:
    """A shipped study by name, or a study YAML file by path."""
    path = Path(name_or_path)
    if str(name_or_path) in study_names():
        path = _study_dir() / f"{name_or_path}.yaml"
    elif path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise StudyError(f"study file {str(path)!r} does not exist")
    elif path.is_file():
        raise StudyError(f"study file {str(path)!r} must end in .yaml or .yml")
    else:
        raise StudyError(f"unknown study {str(name_or_path)!r}; valid: {', '.join(study_names())}, all, "
                         "or a path to a study .yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise StudyError(f"{path}: not valid YAML ({e})") from e
    study = parse_study(data, str(path.name))
    return study
