"""experiment=creative (issue 15): does personalised creative pay, against the simple ways to pick one?

The contact plan is held fixed — mass marketing, the same e-mail to every reachable person every
``every_k_weeks`` weeks — so that the arms differ **only in which creative goes with the e-mail**:

* ``random_creative`` — uniform over the catalogue (what rotating creatives without learning does);
  the paired baseline.
* ``best_single`` — one creative for everyone, learned (:class:`~rapport.agents.creative.BestSingleCreative`).
* ``segment`` — one creative per value segment, 3 terciles of ``avg_spend``
  (:class:`~rapport.agents.creative.SegmentCreative`).
* ``personalised`` — the bilinear embedding bandit (:class:`~rapport.agents.creative_bandits.CreativeLinUCB`)
  scoring each creative's embedding against the person's context.
* ``personalised_top10`` — the same frozen bandit, but each contact sends one of the person's 10
  best-scoring creatives at random (:class:`~rapport.agents.creative.TopKRotation`): personalised
  *and* rotating, the fair test of whether personalisation beats rotation.
* ``do_nothing`` — no contact at all, so that the e-mail's own worth is in the same table.

Learning arms learn online for ``train_episodes`` episodes on the training population
(``train_seed``), from a **lifetime-value-shaped** reward — profit + d·V(next) − V(now), with V the
simulator's residual customer value — not from this week's profit alone, so a creative that sells
today by wearing a person out is not favoured. They are then frozen (greedy) and every arm meets
the same held-out populations (``eval_seeds``, common random numbers): profit, lifetime value,
churn, opt-outs and contacts with paired bootstrap CIs against ``random_creative``.

The wear-out figure (:func:`wear_out_curve`) shows one creative, sent every week to everyone on a
held-out population, against the same e-mail with a random creative: the simulator's wear
multiplier and the purchase rate of people contacted, by how many times they have seen it.

Run: ``rapport-creative [creatives=1000 customers=10000 out=DIR]`` (Hydra overrides of ``conf/creative.yaml``).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rapport import envs
from rapport.agents.baselines import DoNothing, MassMarketing
from rapport.agents.creative import (
    BestSingleCreative,
    FixedCreative,
    RandomCreative,
    SegmentCreative,
    TopKRotation,
    WithCreative,
)
from rapport.agents.creative_bandits import CreativeLinUCB
from rapport.experiments import builders
from rapport.experiments.config import CONFIG_PATH
from rapport.experiments.errors import marks_failed_output, run_hydra_app, user_input
from rapport.experiments.evaluation import EvalSettings, Summary, evaluate, format_table, summarize

__all__ = ["CreativeStudy", "FIVE_KPIS", "run", "train_selector", "wear_out_curve"]

FIVE_KPIS = ("kpi/profit_per_customer", "kpi/lifetime_value_per_customer", "kpi/churned_share",
             "kpi/opt_outs_per_customer", "kpi/contacts_per_customer")
"""Every result shows these together (design §6)."""

LEARNED = ("best_single", "segment", "personalised")


@dataclass(frozen=True)
class CreativeStudy:
    """Settings of ``experiment=creative`` (defaults: the shipped run)."""

    scenario: str = "retail"
    creatives: int = 1000
    customers: int = 10000
    horizon: int = 52
    every_k_weeks: int = 2
    train_episodes: int = 2
    train_seed: int = 7100
    eval_seeds: tuple[int, ...] = (9100, 9101, 9102)
    n_boot: int = 1000
    annual_discount_rate: float = 0.10
    alpha: float = 1.0
    """UCB bonus of the learning arms while they learn (greedy once frozen)."""

    def __post_init__(self) -> None:
        checks = {"creatives": (self.creatives, 1, 100_000), "customers": (self.customers, 3, None),
                  "horizon": (self.horizon, 1, None), "every_k_weeks": (self.every_k_weeks, 1, None),
                  "train_episodes": (self.train_episodes, 1, None), "n_boot": (self.n_boot, 10, None)}
        for key, (value, low, high) in checks.items():
            if not isinstance(value, (int, np.integer)) or value < low or (high is not None and value > high):
                valid = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
                raise ValueError(f"creative study: {key} must be {valid}, got {value!r}")
        if not self.eval_seeds:
            raise ValueError("creative study: eval_seeds needs at least one held-out population seed")
        if self.train_seed in self.eval_seeds:
            raise ValueError(f"creative study: train_seed {self.train_seed} is also in eval_seeds "
                             f"{self.eval_seeds}; the evaluation populations must be held out")
        if self.alpha < 0:
            raise ValueError(f"creative study: alpha must be >= 0, got {self.alpha!r}")

    def world(self) -> envs.Scenario:
        base = envs.get_scenario(self.scenario)
        return dataclasses.replace(base, creative=dataclasses.replace(base.creative, count=self.creatives))

    @property
    def weekly_discount(self) -> float:
        return (1.0 + self.annual_discount_rate) ** (-1.0 / 52.0)


def _env(study: CreativeStudy, scenario: envs.Scenario) -> envs.PopulationEnv:
    return envs.PopulationEnv(num_envs=study.customers, scenario=scenario, horizon=study.horizon,
                              include_latent=True, value_discount=study.weekly_discount)


def _selector(name: str, schema: Any, study: CreativeStudy) -> Any:
    if name == "random_creative":
        return RandomCreative.from_schema(schema)
    if name == "best_single":
        return BestSingleCreative.from_schema(schema, alpha=study.alpha)
    if name == "segment":
        return SegmentCreative.from_schema(schema, alpha=study.alpha)
    if name == "personalised":
        return CreativeLinUCB.from_schema(schema, alpha=study.alpha)
    raise ValueError(f"unknown creative arm {name!r}; valid: random_creative, {', '.join(LEARNED)}")


def _mass(schema: Any, study: CreativeStudy, every_k_weeks: int | None = None) -> MassMarketing:
    return MassMarketing(schema.base_schema(), channel="email", offer=0, spend_level=0,
                         every_k_weeks=every_k_weeks or study.every_k_weeks, horizon=study.horizon)


def train_selector(name: str, study: CreativeStudy, scenario: envs.Scenario) -> tuple[Any, list[float]]:
    """Learn arm ``name`` online on the training population; returns (frozen greedy selector,
    mean shaped reward of the contacted rows, per week of training)."""
    env = _env(study, scenario)
    schema = builders.schema_of(env)
    selector = _selector(name, schema, study)
    policy = WithCreative(_mass(schema, study), selector)
    rng = np.random.default_rng([study.train_seed, 1])
    curve: list[float] = []
    for episode in range(study.train_episodes):
        obs, info = env.reset(seed=study.train_seed) if episode == 0 else env.reset()
        learnable = np.ones(env.num_envs, bool)
        for _ in range(study.horizon):
            actions, _ = policy.act(obs, rng, action_mask=info["action_mask"])
            value = info["residual_value"].copy()
            next_obs, profit, terminated, truncated, info = env.step(actions)
            # lifetime-value-shaped: this week's profit plus the change in discounted residual value
            shaped = profit + study.weekly_discount * info["residual_value"] - value
            contacted = learnable & (actions[:, 0] >= 1)
            selector.update(obs, actions[:, 3], shaped, contacted)
            if contacted.any():
                curve.append(float(shaped[contacted].mean()))
            learnable = ~(terminated | truncated)
            obs = next_obs
    return selector.policy(explore=False), curve


def arms(study: CreativeStudy, scenario: envs.Scenario) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The policies evaluated (env -> policy factories) and the learning arms' training curves."""
    curves: dict[str, list[float]] = {}
    frozen: dict[str, Any] = {}
    for name in LEARNED:
        frozen[name], curves[name] = train_selector(name, study, scenario)

    def with_selector(name: str) -> Any:
        def build(env: envs.PopulationEnv) -> WithCreative:
            schema = builders.schema_of(env)
            if name == "random_creative":
                sel = _selector(name, schema, study)
            elif name == "personalised_top10":
                sel = TopKRotation(frozen["personalised"], k=min(10, study.creatives))
            else:
                sel = frozen[name]
            return WithCreative(_mass(schema, study), sel)
        return build

    def nothing(env: envs.PopulationEnv) -> WithCreative:
        schema = builders.schema_of(env)
        return WithCreative(DoNothing(schema.base_schema()), FixedCreative.from_schema(schema))

    policies = {"do_nothing": nothing, "random_creative": with_selector("random_creative")}
    policies.update({name: with_selector(name) for name in (*LEARNED, "personalised_top10")})
    return policies, curves


def wear_out_curve(study: CreativeStudy, scenario: envs.Scenario, *, weeks: int = 12,
                   creative_id: int | None = None) -> pd.DataFrame:
    """Response to one creative by exposure: e-mail everyone every week on the first held-out
    population, with ``creative_id`` always (default: creative 0) or a random creative.

    Rows ``arm, exposure, people, wear, buy_rate``: ``exposure`` is how many times the person has
    now been sent *that* creative (for the random arm: the e-mail, each time a fresh creative),
    ``wear`` the simulator's wear multiplier on that contact, ``buy_rate`` the share of the
    contacted people who ordered that week.
    """
    rows = []
    seed = study.eval_seeds[0]
    for arm in ("fixed", "random"):
        env = envs.PopulationEnv(num_envs=study.customers, scenario=scenario, horizon=weeks, include_latent=True)
        schema = builders.schema_of(env)
        sel = (FixedCreative.from_schema(schema, creative_id=creative_id or 0) if arm == "fixed"
               else RandomCreative.from_schema(schema))
        policy = WithCreative(_mass(schema, study, every_k_weeks=1), sel)
        rng = np.random.default_rng([seed, 2])
        exposures = np.zeros(env.num_envs, np.int64)
        obs, info = env.reset(seed=seed)
        for _ in range(weeks):
            actions, _ = policy.act(obs, rng, action_mask=info["action_mask"])
            obs, _, _, _, info = env.step(actions)
            shown = info["creative"]["id"] >= 0
            exposures[shown] += 1
            ordered = np.asarray(info["orders"]) > 0
            for k in np.unique(exposures[shown]):
                at = shown & (exposures == k)
                rows.append({"arm": arm, "exposure": int(k), "people": int(at.sum()),
                             "wear": float(info["creative"]["wear"][at].mean()),
                             "buy_rate": float(ordered[at].mean())})
    df = pd.DataFrame(rows)
    return df.groupby(["arm", "exposure"], as_index=False).apply(
        lambda g: pd.Series({"people": g.people.sum(), "wear": np.average(g.wear, weights=g.people),
                             "buy_rate": np.average(g.buy_rate, weights=g.people)}),
        include_groups=False).reset_index(drop=True)


def wear_out_plot(curve: pd.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    from rapport.experiments import plots  # noqa: F401  (sets the Agg backend)

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    for arm, g in curve.groupby("arm"):
        label = "same creative every time" if arm == "fixed" else "a random creative each time"
        a.plot(g.exposure, g.wear, marker="o", label=label)
        b.plot(g.exposure, g.buy_rate, marker="o", label=label)
    a.set(xlabel="exposures so far", ylabel="wear multiplier on the contact", title="Wear-out")
    b.set(xlabel="exposures so far", ylabel="share of contacted who ordered", title="Response")
    a.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run(study: CreativeStudy, out: Path | None = None) -> tuple[Summary, pd.DataFrame]:
    """Train, evaluate on the held-out populations and (with ``out``) write table, CSVs and the plot."""
    scenario = study.world()
    policies, curves = arms(study, scenario)
    settings = EvalSettings(scenario=scenario, customers=study.customers, horizon=study.horizon,
                            seeds=tuple(study.eval_seeds), annual_discount_rate=study.annual_discount_rate)
    ev = evaluate(policies, settings, roles={"do_nothing": "baseline", "random_creative": "baseline"})
    summary = summarize(ev, baseline="random_creative", n_boot=study.n_boot)
    wear = wear_out_curve(study, scenario)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        summary.kpis.to_csv(out / "kpis.csv", index=False)
        summary.diffs.to_csv(out / "paired_diffs.csv", index=False)
        wear.to_csv(out / "wear_out.csv", index=False)
        (out / "training_curves.json").write_text(json.dumps(curves))
        (out / "table.txt").write_text(format_table(summary, FIVE_KPIS) + "\n")
        (out / "study.json").write_text(json.dumps(dataclasses.asdict(study), indent=1))
        fig = wear_out_plot(wear)
        fig.savefig(out / "wear_out.png", dpi=110)
    return summary, wear


def study_from_config(cfg: Any) -> tuple[CreativeStudy, Path | None]:
    """A :class:`CreativeStudy` and the output folder from ``conf/creative.yaml`` (after overrides);
    an unknown key is refused naming the valid ones."""
    values = dict(cfg)
    out = values.pop("out", None)
    valid = {f.name for f in dataclasses.fields(CreativeStudy)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ValueError(f"rapport-creative: unknown key(s) {unknown}; valid: {', '.join(sorted(valid | {'out'}))}")
    if "eval_seeds" in values:
        seeds = values["eval_seeds"]
        values["eval_seeds"] = tuple(int(s) for s in (seeds if isinstance(seeds, Sequence) else [seeds]))
    return CreativeStudy(**values), None if out is None else Path(str(out))


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``rapport-creative`` (Hydra app over ``conf/creative.yaml``); ``argv``: the
    overrides (default: the command line). Failures print one line and exit non-zero."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="creative")
    def _app(cfg: Any) -> None:
        with marks_failed_output():
            with user_input():
                study, out = study_from_config(OmegaConf.to_container(cfg, resolve=True))
            out = out if out is not None else Path(HydraConfig.get().runtime.output_dir)
            summary, wear = run(study, out)
            print(format_table(summary, FIVE_KPIS))
            print(f"\nwear-out (first held-out population, e-mail every week):\n{wear.to_string(index=False)}")
            print(f"\nwritten to {out}/")

    run_hydra_app(_app, argv, prog="rapport-creative")


if __name__ == "__main__":
    main()
