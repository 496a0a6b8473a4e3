"""Long-term value: learning agents against mass marketing on profit *and* lifetime value.

Trains each configured RL variant through the same code path as ``rapport-train``
(``rapport.experiments.training.train_agent`` on a config composed from ``conf/``), then evaluates every
policy on the same held-out populations (common random numbers) with mass marketing as the
baseline, and prints, per policy, the five numbers a result must show together: 52-week profit,
lifetime value, churned share, opt-outs and contacts per customer, each with its paired 95 % CI
against mass marketing, and each policy's lifetime-value regret against the long-term oracle
(the myopic oracle's role is "oracle"; both are evaluated unless skipped). Also reports the wall-clock training time of each variant.

Variants (``--variants``, comma-separated; ``name=override;override``):

* ``myopic``: ``agent.objective=myopic`` (profit, discount 0.95, no terminal value) — the old
  default, the contrast;
* ``ltv``: ``agent.objective=lifetime_value`` (the evaluation's discount, residual value paid
  at the horizon) — the new default;
* ``ltv_shaped``: ``agent.objective=lifetime_value_shaped`` (plus potential-based shaping on the
  latent residual value).

``--privileged-critic`` is the ablation of the asymmetric actor-critic (``agent.privileged_critic``,
``rapport.agents.privileged``): every variant is also trained with a critic that sees latent truth
while training, as ``<variant>_priv`` (same seeds, same evaluation populations, so each pair is a
paired comparison); the actor, and so what is evaluated, reads observables only either way.

Seeds: training populations come from ``--seed`` (spawned as in ``rapport-train``); the
evaluation populations are ``--eval-seed`` + 0..k-1. Say in the closing note which evaluation
seeds were looked at while choosing settings: the default 7100 is the validation population
used while developing; 9100 was held out for the final table.

Example::

    python scripts/bench_long_term.py --timesteps 3000000 --variants myopic,ltv,ltv_shaped
    python scripts/bench_long_term.py --timesteps 10000000 --variants ltv,ltv_shaped --privileged-critic
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

from _bench_config import KEYS, settings_for  # noqa: E402

from rapport.experiments import builders  # noqa: E402
from rapport.experiments.config import register_configs  # noqa: E402
from rapport.experiments.evaluation import EvalSettings, evaluate, segment_table, summarize  # noqa: E402
from rapport.experiments.tracking import NullTracker  # noqa: E402
from rapport.experiments.training import train_agent  # noqa: E402

VARIANTS = {"myopic": ["agent.objective=myopic"], "ltv": ["agent.objective=lifetime_value"],
            "ltv_shaped": ["agent.objective=lifetime_value_shaped"]}
REFERENCES = ("mass", "do_nothing", "rfm", "drip")


def parse_variants(spec: str) -> dict[str, list[str]]:
    out = {}
    for item in spec.split(","):
        if "=" in item.split(";")[0] and item.split("=", 1)[0] not in VARIANTS:
            name, rest = item.split("=", 1)
            out[name] = [o for o in rest.split(";") if o]
        elif item in VARIANTS:
            out[item] = VARIANTS[item]
        else:
            raise SystemExit(f"unknown variant {item!r}: use {sorted(VARIANTS)} or name=override;override")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agent", default="ppo")
    ap.add_argument("--variants", default="myopic,ltv,ltv_shaped")
    ap.add_argument("--timesteps", type=int, default=3_000_000)
    ap.add_argument("--train-customers", type=int, default=4096)
    ap.add_argument("--customers", type=int, default=5000, help="per evaluation population")
    ap.add_argument("--eval-populations", type=int, default=2)
    ap.add_argument("--eval-seed", type=int, default=7100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--extra", default="", help="overrides for every variant, ';'-separated")
    ap.add_argument("--no-references", action="store_true", help="skip rfm and drip")
    ap.add_argument("--no-long-term-oracle", action="store_true", help="skip the (slow) long-term oracle")
    ap.add_argument("--privileged-critic", action="store_true",
                    help="also train every variant with agent.privileged_critic=true (as <variant>_priv)")
    args = ap.parse_args()
    register_configs()
    common = [f"agent={args.agent}", f"train.timesteps={args.timesteps}",
              f"train.customers={args.train_customers}", f"env.customers={args.customers}",
              f"seed={args.seed}", "tracking=none", "progress=false"]
    common += [o for o in args.extra.split(";") if o]
    policies, roles, train_seconds = {}, {}, {}
    scenario = None
    variants = parse_variants(args.variants)
    if args.privileged_critic:
        variants = {**variants, **{f"{name}_priv": [*overrides, "agent.privileged_critic=true"]
                                   for name, overrides in variants.items()}}
    for name, overrides in variants.items():
        settings = settings_for(common + overrides)
        scenario = builders.resolve_scenario(settings.env)
        seeds = builders.derive_seeds(settings.seed, 1)
        start = time.perf_counter()
        trained = train_agent(settings, seeds, scenario, NullTracker(), progress=False)
        train_seconds[name] = time.perf_counter() - start
        policies[name] = trained.policy_factory
        roles[name] = "agent"
        print(f"[bench] trained {name} ({' '.join(overrides)}) in {train_seconds[name]:.0f} s", flush=True)
    base_settings = settings_for(common)
    scenario = builders.resolve_scenario(base_settings.env)
    refs = REFERENCES[:2] if args.no_references else REFERENCES
    for ref in refs:
        cfg = settings_for(common + [f"agent={ref}"]).agent
        policies[ref] = builders.policy_factory(cfg, base_settings.constraints)
        roles[ref] = "baseline" if ref == "mass" else "policy"
    oracle_cfg = settings_for(common + ["agent=oracle"]).agent
    policies["myopic_oracle"] = builders.policy_factory(oracle_cfg, base_settings.constraints)
    roles["myopic_oracle"] = "oracle"
    if not args.no_long_term_oracle:
        lt_cfg = settings_for(common + ["agent=long_term_oracle"]).agent
        policies["long_term_oracle"] = builders.policy_factory(lt_cfg, base_settings.constraints)
        roles["long_term_oracle"] = "long_term_oracle"
    es = EvalSettings(scenario, args.customers, base_settings.env.horizon,
                      tuple(args.eval_seed + i for i in range(args.eval_populations)),
                      annual_discount_rate=base_settings.evaluation.annual_discount_rate)
    start = time.perf_counter()
    ev = evaluate(policies, es, roles=roles)
    lt = "long_term_oracle" if "long_term_oracle" in policies else None
    s = summarize(ev, baseline="mass", oracle="myopic_oracle", long_term_oracle=lt, n_boot=1000, seed=0)
    print(f"[bench] evaluated {len(policies)} policies in {time.perf_counter() - start:.0f} s")
    rows = {}
    print(f"\n{args.customers} customers x 52 weeks x {args.eval_populations} populations "
          f"(eval seeds {es.seeds}); [paired 95% CI vs mass]")
    header = f"{'policy':<16}" + "".join(f"{k:>30}" for k in KEYS)
    print(header)
    for p in policies:
        cells, row = [], {}
        for short, key in KEYS.items():
            mean = float(s.kpis[(s.kpis.policy == p) & (s.kpis.key == key)]["mean"].iloc[0])
            row[short] = mean
            d = s.diffs[(s.diffs.policy == p) & (s.diffs.key == key)]
            if len(d):
                r = d.iloc[0]
                row[f"{short}_diff"] = [float(r["diff"]), float(r.ci_low), float(r.ci_high)]
                cells.append(f"{mean:8.3f} {r['diff']:+7.2f}[{r.ci_low:+.2f},{r.ci_high:+.2f}]")
            else:
                cells.append(f"{mean:8.3f}{'':22}")
        reg = s.regret[(s.regret.policy == p) & (s.regret.key == KEYS["ltv"])]
        if len(reg):
            row["ltv_regret"] = [float(reg.regret.iloc[0]), float(reg.ci_low.iloc[0]), float(reg.ci_high.iloc[0])]
        rows[p] = row
        print(f"{p:<16}" + "".join(f"{c:>30}" for c in cells))
    seg = segment_table(s)
    rate = seg.pivot(index="policy", columns="stage", values="contact_rate").loc[list(policies)]
    print("\nshare of a stage's customer-weeks with a contact (what each policy does, by lifecycle stage)")
    print(rate.round(3).to_string())
    for p in policies:
        rows[p]["contact_rate_by_stage"] = {k: round(float(v), 4) for k, v in rate.loc[p].items()}
    for name, secs in train_seconds.items():
        rows[name]["train_seconds"] = secs
    if args.privileged_critic:  # the ablation: each privileged variant paired with its plain twin
        print("\nprivileged critic: <variant>_priv minus <variant> [paired 95% CI]")
        print(f"{'variant':<16}" + "".join(f"{k:>26}" for k in KEYS) + f"{'train s':>10}")
        for plain in (n for n in variants if not n.endswith("_priv")):
            priv = f"{plain}_priv"
            pair = summarize(ev, baseline=plain, policies=[plain, priv], n_boot=1000, seed=0).diffs
            cells, vs = [], {}
            for short, key in KEYS.items():
                r = pair[(pair.policy == priv) & (pair.key == key)].iloc[0]
                vs[short] = [float(r["diff"]), float(r.ci_low), float(r.ci_high)]
                cells.append(f"{r['diff']:+8.3f}[{r.ci_low:+.2f},{r.ci_high:+.2f}]")
            rows[priv]["vs_plain"] = vs
            print(f"{plain:<16}" + "".join(f"{c:>26}" for c in cells)
                  + f"{train_seconds[priv] - train_seconds[plain]:>+10.0f}")
    print(json.dumps({"bench": "long_term", "timesteps": args.timesteps, "eval_seeds": list(es.seeds),
                      "privileged_critic_ablation": bool(args.privileged_critic),
                      "customers": args.customers, "policies": rows}))


if __name__ == "__main__":
    main()
