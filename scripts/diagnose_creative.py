"""What each creative arm of rapport-creative sends: true taste match, wear, explicit share.

Trains the personalised arm as ``rapport-creative`` does (defaults of ``CreativeStudy``), then runs
random, greedy-personalised and top-10-rotating creative with the fixed e-mail plan on held-out
population 9100 for 26 weeks, and prints the mean latent match (``info["creative"]["match"]``),
wear multiplier and share of ``explicit_personal`` creatives among the sends.

Run: ``.venv/bin/python scripts/diagnose_creative.py`` (~15 s here); figures in the README.
"""

from __future__ import annotations

import numpy as np

from rapport import envs
from rapport.agents.creative import RandomCreative, TopKRotation, WithCreative
from rapport.experiments import builders
from rapport.experiments.creative import CreativeStudy, _mass, train_selector

WEEKS, SEED = 26, 9100


def main() -> None:
    study = CreativeStudy()
    scenario = study.world()
    personal, _ = train_selector("personalised", study, scenario)
    for name in ("random", "personalised", "top10"):
        env = envs.PopulationEnv(num_envs=study.customers, scenario=scenario, horizon=WEEKS, include_latent=True)
        schema = builders.schema_of(env)
        selector = {"random": RandomCreative.from_schema(schema), "personalised": personal,
                    "top10": TopKRotation(personal, 10)}[name]
        policy = WithCreative(_mass(schema, study), selector)
        rng = np.random.default_rng(0)
        obs, info = env.reset(seed=SEED)
        explicit = env.creative_attributes["explicitness"] == 2  # explicit_personal
        match, wear, share = [], [], []
        for _ in range(WEEKS):
            actions, _ = policy.act(obs, rng, action_mask=info["action_mask"])
            obs, _, _, _, info = env.step(actions)
            shown = info["creative"]["id"] >= 0
            if shown.any():
                match.append(info["creative"]["match"][shown].mean())
                wear.append(info["creative"]["wear"][shown].mean())
                share.append(explicit[info["creative"]["id"][shown]].mean())
        print(f"{name:<13} match {np.mean(match):.3f}  wear {np.mean(wear):.3f}  "
              f"explicit_personal share {np.mean(share):.3f}")


if __name__ == "__main__":
    main()
