"""Awareness gates attention to personal messages ("no one pays attention to personalized
messages from an unknown brand").

A delivered contact lifts a customer's log purchase rate by β·e^(−κF)·ν(T)·π (customer-model.md
§2.5-2.6, :func:`rapport.envs.marketing.marketing_effect`). Those lifts were calibrated on a
known brand's customers (Hillstrom's e-mail test). Here the lift is multiplied by an attention
factor of the market's current brand awareness A_t (§2.9)::

    g(A_t) = (A_t / A_att)^s          s = mass_media.attention_strength
                                      A_att = mass_media.attention_reference

so log g = s·log(A_t / A_att), the same log-linear form as awareness's own effect on the rate
(η_A·log(A_t / A_ref)). g = 1 at A_att (the calibrated lift), g < 1 below it (an unknown brand's
e-mail is opened and believed less), g > 1 above it. With s = 0 (the default) g is exactly 1 and
the mechanism does nothing (no code runs in the per-customer step). What is gated: the contact
lift of every channel; not the price terms of an offer (a customer who buys anyway redeems the
discount), not the recommendation's relevance term, not per-person paid-media spend (the
awareness effect on prospects is :attr:`ProspectModel.awareness_elasticity`).

The factor is one population-level scalar a week (awareness is the market's), so it travels
with the week's :class:`rapport.envs.marketing.MarketWeek` like the other market terms and a
customer's trajectory still does not depend on who else is in the population.
"""

from __future__ import annotations

from rapport.envs.mechanism_params import MassMediaModel


def attention_factor(mass_media: MassMediaModel, awareness: float) -> float:
    """g(A) = (A / attention_reference)^attention_strength; exactly 1.0 when the strength is 0."""
    s = mass_media.attention_strength
    if s == 0:
        return 1.0
    return float((awareness / mass_media.attention_reference) ** s)
