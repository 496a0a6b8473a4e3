"""The exported decision as one torch module: raw observable features in, decisions out.

Every exported policy is a :class:`DecisionModule`::

    features (n, F) float32 ──► eligibility layer (opt-in columns ─► per-dimension masks)
                            └─► policy scorer (its own preprocessing inside) ─► selector
                                                 ──► actions (n, 3) int64, propensity (n,) float64

* **Eligibility** (:class:`EligibilityLayer`) re-implements the simulator's action-mask rule
  (``rapport.envs.observation.action_mask``) from observable columns only: channel ``j`` is useful when
  ``optin_<channel j>`` is set; an offer needs some reachable channel; paid-media spend levels
  need the paid-media opt-in; "no contact", "no offer" and "no spend" are always allowed. A test
  checks it against the simulator's own mask.
* **Scorers** carry the preprocessing the policy was trained with: SB3 observation
  normalisation (VecNormalize statistics) for deep-RL policies, the bandit's feature
  standardisation for linear bandits.
* **Selectors** turn scores into a decision. ``mode="greedy"`` is deterministic (propensity 1.0).
  Exploration modes take their randomness as *inputs* (``noise``, and for Thompson sampling
  ``propensity_noise``), so the exported graph is a pure function, the caller owns the random
  stream, and the same noise reproduces the same decision.

Only tensor ops that ``torch.export`` and the ONNX exporter handle are used (index_select,
where, argmax, cumsum, matmul), so one module serves both formats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from stable_baselines3.common.policies import BaseModel
from torch import nn

__all__ = [
    "DecisionModule",
    "EligibilityLayer",
    "EligibilityRule",
    "LinearArmScorer",
    "SB3Scorer",
]

PAID_MEDIA = "paid_media"


# --------------------------------------------------------------------------- eligibility


@dataclass(frozen=True)
class EligibilityRule:
    """Which actions are allowed, computed from observable feature columns.

    The simulator's rule (``rapport.envs.observation.action_mask``: a channel needs the customer's
    opt-in) restated over the ``optin_<channel>`` features so that it can travel inside an
    exported model, and, when the run had them, the contact rules it trained and was evaluated
    under (``rapport.agents.constraints.ContactRules``): at most ``max_contacts_4w`` contacts in the
    previous 4 weeks plus this one (``contacts_4w_<channel>`` summed), none unless every
    ``weeks_since_contact_<channel>`` is at least ``quiet_weeks``.
    """

    nvec: tuple[int, int, int]
    """(channels + 1, offers, spend levels)."""
    optin_columns: tuple[int, ...]
    """Feature column of ``optin_<channel>`` for each channel, in action order."""
    spend_channel: int | None
    """Channel (0-based, in ``channel_names``) whose opt-in gates paid-media spend; ``None``:
    spend levels are always allowed."""
    max_contacts_4w: int | None = None
    """Contact cap over the last 4 weeks plus this one (None: no cap)."""
    quiet_weeks: int = 0
    """Weeks since the last contact (any channel) before the next one (0: no rule)."""
    count_columns: tuple[int, ...] = ()
    """``contacts_4w_<channel>`` columns (needed with a cap)."""
    since_columns: tuple[int, ...] = ()
    """``weeks_since_contact_<channel>`` columns (needed with quiet weeks)."""

    @classmethod
    def from_schema(cls, feature_names: Sequence[str], channel_names: Sequence[str],
                    nvec: Sequence[int], *, max_contacts_4w: int | None = None,
                    quiet_weeks: int = 0) -> EligibilityRule:
        names = list(feature_names)
        needed = [f"optin_{c}" for c in channel_names]
        if max_contacts_4w is not None:
            needed += [f"contacts_4w_{c}" for c in channel_names]
        if quiet_weeks > 0:
            needed += [f"weeks_since_contact_{c}" for c in channel_names]
        missing = [f for f in needed if f not in names]
        if missing:
            raise ValueError(
                f"the eligibility layer needs these features; missing {', '.join(missing)} among "
                f"features {', '.join(feature_names)}")
        cols = tuple(names.index(f"optin_{c}") for c in channel_names)
        spend = list(channel_names).index(PAID_MEDIA) if PAID_MEDIA in channel_names else None
        counts = tuple(names.index(f"contacts_4w_{c}") for c in channel_names) \
            if max_contacts_4w is not None else ()
        since = tuple(names.index(f"weeks_since_contact_{c}") for c in channel_names) \
            if quiet_weeks > 0 else ()
        return cls((int(nvec[0]), int(nvec[1]), int(nvec[2])), cols, spend,
                   None if max_contacts_4w is None else int(max_contacts_4w), int(quiet_weeks),
                   counts, since)

    def mask(self, features: np.ndarray) -> np.ndarray:
        """Numpy reference: bool (n, sum(nvec)), the per-dimension masks concatenated."""
        n_ch, n_off, n_sp = self.nvec
        features = np.asarray(features)
        optin = features[:, list(self.optin_columns)] > 0.5
        reach = optin.copy()
        if self.max_contacts_4w is not None:
            reach &= (features[:, list(self.count_columns)].sum(axis=1) + 1
                      <= self.max_contacts_4w)[:, None]
        if self.quiet_weeks > 0:
            reach &= (features[:, list(self.since_columns)].min(axis=1) >= self.quiet_weeks)[:, None]
        mask = np.ones((len(optin), n_ch + n_off + n_sp), bool)
        mask[:, 1:n_ch] = reach
        mask[:, n_ch + 1:n_ch + n_off] = reach.any(axis=1, keepdims=True)
        if self.spend_channel is not None:
            mask[:, n_ch + n_off + 1:] = optin[:, self.spend_channel:self.spend_channel + 1]
        return mask


class EligibilityLayer(nn.Module):
    """Tensor version of :class:`EligibilityRule`: features -> (channel, offer, spend) masks."""

    def __init__(self, rule: EligibilityRule):
        super().__init__()
        self.rule = rule
        self.register_buffer("optin_columns", torch.tensor(rule.optin_columns, dtype=torch.int64))
        self.register_buffer("count_columns", torch.tensor(rule.count_columns, dtype=torch.int64))
        self.register_buffer("since_columns", torch.tensor(rule.since_columns, dtype=torch.int64))

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n_ch, n_off, n_sp = self.rule.nvec
        optin = torch.index_select(features, 1, self.optin_columns) > 0.5
        reach = optin
        if self.rule.max_contacts_4w is not None:
            counts = torch.index_select(features, 1, self.count_columns).sum(dim=1, keepdim=True)
            reach = reach & (counts + 1.0 <= float(self.rule.max_contacts_4w))
        if self.rule.quiet_weeks > 0:
            since = torch.index_select(features, 1, self.since_columns).amin(dim=1, keepdim=True)
            reach = reach & (since >= float(self.rule.quiet_weeks))
        always = torch.ones_like(optin[:, :1])
        channel = torch.cat([always, reach], dim=1)
        offer = always
        if n_off > 1:
            any_reach = reach.any(dim=1, keepdim=True)
            offer = torch.cat([always, any_reach.expand(-1, n_off - 1)], dim=1)
        spend = always
        if n_sp > 1:
            if self.rule.spend_channel is None:
                gate = always
            else:
                k = self.rule.spend_channel
                gate = optin[:, k:k + 1]
            spend = torch.cat([always, gate.expand(-1, n_sp - 1)], dim=1)
        return channel, offer, spend


def unravel(joint: torch.Tensor, nvec: tuple[int, int, int]) -> torch.Tensor:
    """(n,) joint indices -> (n, 3) per-dimension actions (C order)."""
    _, n_off, n_sp = nvec
    return torch.stack([joint // (n_off * n_sp), (joint // n_sp) % n_off, joint % n_sp], dim=1)


def arm_components(arms: np.ndarray, nvec: tuple[int, int, int]) -> np.ndarray:
    """(sum(nvec), K) 0/1 matrix with a 1 in each arm's three component rows."""
    offsets = np.cumsum((0, *nvec[:-1]))
    select = np.zeros((int(sum(nvec)), len(arms)))
    for d in range(3):
        select[offsets[d] + arms[:, d], np.arange(len(arms))] = 1.0
    return select


FORBIDDEN = 1e30
"""Score added per forbidden component of an arm. Masking by ``forbidden @ (-1e30 * S)`` -- a
matrix product, folded into the scoring product where possible -- instead of gathers of bool
columns and a broadcast ``where`` over (n, K), which onnxruntime runs at ~15 ns per element;
an allowed arm gets exactly +0, so its score is unchanged, and exp(-1e30) is exactly 0."""


class ArmPenalty(nn.Module):
    """Additive mask (n, K) for K joint actions ("arms", (K, 3)) from per-dimension masks."""

    def __init__(self, arms: np.ndarray, nvec: tuple[int, int, int]):
        super().__init__()
        self.register_buffer("weights", torch.as_tensor(
            -FORBIDDEN * arm_components(arms, nvec), dtype=torch.float32))

    def forward(self, channel: torch.Tensor, offer: torch.Tensor,
                spend: torch.Tensor) -> torch.Tensor:
        forbidden = ~torch.cat([channel, offer, spend], dim=1)
        return forbidden.float() @ self.weights


def _cdf_sample(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw per row with a uniform ``u`` (n, 1); as ``rapport.agents.rl_policy.SB3Policy``."""
    cdf = torch.cumsum(probs, dim=1)
    cdf = cdf / cdf[:, -1:]
    return (cdf <= u).sum(dim=1)


def _pick(values: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(values, 1, idx.unsqueeze(1)).squeeze(1)


# --------------------------------------------------------------------------- SB3 policies


class SB3Scorer(nn.Module):
    """Observation normalisation + an SB3 policy's action head: logits (or Q-values).

    Parameters
    ----------
    policy
        The SB3 ``policy`` module (``model.policy``), deep-copied by the caller.
    is_dqn
        Q-values (``policy.q_net``) instead of the actor's logits.
    obs_mean, obs_var, clip_obs, epsilon
        VecNormalize statistics; ``obs_mean is None``: no normalisation.
    """

    def __init__(self, policy: nn.Module, is_dqn: bool, obs_mean: np.ndarray | None = None,
                 obs_var: np.ndarray | None = None, clip_obs: float = 10.0,
                 epsilon: float = 1e-8):
        super().__init__()
        self.policy = policy.eval()
        self.is_dqn = is_dqn
        self.normalize = obs_mean is not None
        if self.normalize:
            self.register_buffer("obs_mean", torch.as_tensor(np.asarray(obs_mean, np.float64)))
            inv = 1.0 / np.sqrt(np.asarray(obs_var, np.float64) + float(epsilon))
            self.register_buffer("obs_inv_std", torch.as_tensor(inv))
            self.clip_obs = float(clip_obs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        obs = features
        if self.normalize:  # in float64 then float32, as VecNormalize hands obs to the policy
            obs = ((features.double() - self.obs_mean) * self.obs_inv_std)
            obs = obs.clamp(-self.clip_obs, self.clip_obs).float()
        if self.is_dqn:
            return self.policy.q_net(obs)
        # the actor's own features extractor alone (an ActorCriticPolicy whose extractors are not
        # shared would run the critic's too and return both): for an asymmetric actor-critic
        # (rapport.agents.privileged) it reads the observable columns, all this graph takes
        features = BaseModel.extract_features(self.policy, obs, self.policy.pi_features_extractor)
        return self.policy.action_net(self.policy.mlp_extractor.forward_actor(features))


class SB3Selector(nn.Module):
    """Masked greedy / sampled choice over an SB3 model's action dimensions.

    ``dims``: the model's own action dimensions (``nvec`` for MultiDiscrete models,
    ``(prod(nvec),)`` for Discrete / flattened ones). Sampling uses one uniform per dimension
    (``noise[:, d]``), the draw :class:`rapport.agents.rl_policy.SB3Policy` makes with ``rng.random``.
    """

    def __init__(self, dims: tuple[int, ...], nvec: tuple[int, int, int], is_dqn: bool,
                 sample: bool, epsilon: float):
        super().__init__()
        self.dims, self.nvec, self.is_dqn = dims, nvec, is_dqn
        self.sample, self.epsilon = sample, float(epsilon)
        self.flattened = len(dims) == 1 and len(nvec) > 1
        # float64 constants as buffers: Python scalars may become float32 constants in ONNX,
        # and 0.8f + 0.2 is a propensity above 1
        self.register_buffer("eps64", torch.tensor(self.epsilon, dtype=torch.float64))
        if self.flattened:
            self.joint = ArmPenalty(np.indices(nvec).reshape(3, -1).T, nvec)

    def forward(self, scores: torch.Tensor, masks: tuple[torch.Tensor, ...],
                noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        penalties: list[torch.Tensor | None] = [None] * len(self.dims)
        if self.flattened:
            penalty = self.joint(*masks)
            masks, penalties = (penalty > -0.5,), [penalty]
        chosen, propensity = [], None
        start = 0
        for d, k in enumerate(self.dims):
            s, m = scores[:, start:start + k], masks[d]
            start += k
            if penalties[d] is not None:  # (n, prod(nvec)): additive, see FORBIDDEN
                masked = s + penalties[d].to(s.dtype)
            else:
                masked = torch.where(m, s, torch.full_like(s, float("-inf")))
            if self.is_dqn:
                best = masked.argmax(dim=1)
                if not self.sample:
                    chosen.append(best)
                    continue
                allowed = m.double()
                probs = allowed * (self.eps64 / allowed.sum(dim=1, keepdim=True))
                probs = probs + (1.0 - self.eps64) * nn.functional.one_hot(best, k).double()
            else:
                if not self.sample:
                    chosen.append(masked.argmax(dim=1))
                    continue
                probs = torch.softmax(masked, dim=1).double()
            a = _cdf_sample(probs, noise[:, d:d + 1])
            p = _pick(probs / probs.sum(dim=1, keepdim=True), a)
            propensity = p if propensity is None else propensity * p
            chosen.append(a)
        actions = unravel(chosen[0], self.nvec) if self.flattened else torch.stack(chosen, dim=1)
        if propensity is None:
            propensity = torch.ones_like(actions[:, 0], dtype=torch.float64)
        return actions, propensity


# --------------------------------------------------------------------------- linear bandits


class LinearArmScorer(nn.Module):
    """A bandit's per-arm ridge model on the allowed arms.

    ``masked_mean = [x - mean | forbidden] @ [θ[:, :d]ᵀ/std ; -1e30·S] + θ[:, d]`` in float32:
    the standardisation folded into the weights, exactly as ``rapport.agents.bandits.LinearFit.predict``
    scores (so near-ties round the same way), with the eligibility penalty (:data:`FORBIDDEN`)
    folded into the same matrix product. With ``cov`` also ``var = z̃ᵀ cov_k z̃`` in float64, as
    a product of the upper triangle of ``z̃ z̃ᵀ`` with the stacked covariances ((n, (d+1)(d+2)/2)
    memory instead of (n, K, d+1)).
    """

    def __init__(self, feature_mean: np.ndarray, feature_std: np.ndarray, theta: np.ndarray,
                 cov: np.ndarray | None, arms: np.ndarray, nvec: tuple[int, int, int]):
        super().__init__()
        theta = np.asarray(theta, np.float64)
        d = theta.shape[1] - 1
        inv_std = 1.0 / np.asarray(feature_std, np.float64)
        weights = np.concatenate([(theta[:, :d] * inv_std).T, -FORBIDDEN * arm_components(arms, nvec)])
        self.register_buffer("mean32", torch.as_tensor(np.asarray(feature_mean, np.float32)))
        self.register_buffer("weights", torch.as_tensor(weights.astype(np.float32)))
        self.register_buffer("bias", torch.as_tensor(theta[:, d].astype(np.float32)))
        self.with_var = cov is not None
        if self.with_var:
            self.register_buffer("feature_mean", torch.as_tensor(np.asarray(feature_mean,
                                                                            np.float64)))
            self.register_buffer("feature_inv_std", torch.as_tensor(inv_std))
            i, j = np.triu_indices(d + 1)
            factor = np.where(i == j, 1.0, 2.0)  # off-diagonal terms appear twice in zᵀCz
            tri = cov[:, i, j].T * factor[:, None]  # (T, K)
            self.register_buffer("tri_i", torch.as_tensor(i.astype(np.int64)))
            self.register_buffer("tri_j", torch.as_tensor(j.astype(np.int64)))
            self.register_buffer("tri_cov", torch.as_tensor(np.ascontiguousarray(tri, np.float64)))

    def forward(self, features: torch.Tensor, masks: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        centred = features - self.mean32  # centre first: no cancellation in float32
        forbidden = (~torch.cat(masks, dim=1)).float()
        masked_mean = torch.cat([centred, forbidden], dim=1) @ self.weights + self.bias
        if not self.with_var:
            return masked_mean, None
        z = (features.double() - self.feature_mean) * self.feature_inv_std
        z = torch.cat([z, torch.ones_like(z[:, :1])], dim=1)
        zz = torch.index_select(z, 1, self.tri_i) * torch.index_select(z, 1, self.tri_j)
        return masked_mean, (zz @ self.tri_cov).clamp(min=0.0)


class LinearArmSelector(nn.Module):
    """Choice among candidate arms (K, 3) given their masked scores.

    Modes: ``greedy`` (argmax mean; ties to the first arm; propensity 1), ``ucb`` (argmax of
    mean + ``scale``·sqrt(var); propensity 1), ``epsilon`` (greedy with probability 1-ε, else
    uniform over allowed arms; ``noise[:, 0]`` picks the uniform arm and ``noise[:, 1] < ε``
    decides to explore -- the order in which ``rapport.agents.bandits.EpsilonRule`` draws them),
    ``thompson`` (argmax of mean + ``scale``·sqrt(var)·``noise`` with ``noise`` (n, K) standard
    normal; propensity ``(hits + 1) / (M + 1)`` over the M rows of ``propensity_noise``, as
    ``rapport.agents.bandits.ThompsonRule``). Rows with no allowed candidate get do-nothing, propensity 1.
    """

    def __init__(self, arms: np.ndarray, mode: str, epsilon: float = 0.0, scale: float = 0.0):
        super().__init__()
        self.register_buffer("arms", torch.as_tensor(arms.astype(np.int64)))
        self.mode, self.epsilon, self.scale = mode, float(epsilon), float(scale)
        # float64 constants as buffers: Python scalars may become float32 constants in ONNX,
        # and 0.8f + 0.2 is a propensity above 1
        self.register_buffer("eps64", torch.tensor(self.epsilon, dtype=torch.float64))
        self.register_buffer("scale64", torch.tensor(self.scale, dtype=torch.float64))

    def forward(self, masked_mean: torch.Tensor, var: torch.Tensor | None,
                noise: torch.Tensor | None,
                propensity_noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        ones = torch.ones_like(masked_mean[:, 0], dtype=torch.float64)
        if self.mode == "ucb":
            score = masked_mean.double() + self.scale64 * torch.sqrt(var)
        elif self.mode == "thompson":
            sd = self.scale64 * torch.sqrt(var)
            score = masked_mean.double() + sd * noise
        else:
            score = masked_mean
        best, idx = score.max(dim=1)
        none = best < -0.5 * FORBIDDEN  # no candidate arm allowed: do nothing
        propensity = ones
        if self.mode == "epsilon":
            allowed = (masked_mean > -0.5 * FORBIDDEN).float()
            n_allowed = allowed.sum(dim=1, keepdim=True)
            k = torch.floor(noise[:, 0:1] * n_allowed.double())
            uniform = (torch.cumsum(allowed, dim=1).double() <= k).sum(dim=1)
            uniform = uniform.clamp(max=masked_mean.shape[1] - 1)
            explore = noise[:, 1] < self.eps64
            greedy = idx
            idx = torch.where(explore, uniform, greedy)
            propensity = ((1.0 - self.eps64) * (idx == greedy).double()
                          + self.eps64 / n_allowed.squeeze(1).clamp(min=1).double())
        elif self.mode == "thompson" and propensity_noise is not None:
            draws = (masked_mean.double().unsqueeze(1)
                     + sd.unsqueeze(1) * propensity_noise.unsqueeze(0))
            hits = (draws.argmax(dim=2) == idx.unsqueeze(1)).sum(dim=1).double()
            propensity = (hits + 1.0) / (hits.new_full((), propensity_noise.shape[0]) + 1.0)
        actions = torch.index_select(self.arms, 0, idx)
        actions = torch.where(none.unsqueeze(1), torch.zeros_like(actions), actions)
        propensity = torch.where(none, ones, propensity)
        return actions, propensity


# --------------------------------------------------------------------------- the whole decision


class DecisionModule(nn.Module):
    """Eligibility + scorer + selector. ``forward(features[, noise[, propensity_noise]])``.

    ``n_noise_inputs`` (0, 1 or 2) says which of the optional inputs the exported graph takes;
    :func:`exported` wraps the module with exactly that signature.
    """

    def __init__(self, eligibility: EligibilityLayer, scorer: nn.Module, selector: nn.Module,
                 kind: str, n_noise_inputs: int):
        super().__init__()
        self.eligibility, self.scorer, self.selector = eligibility, scorer, selector
        self.kind = kind  # "sb3" | "linear"
        self.n_noise_inputs = n_noise_inputs

    def decide(self, features: torch.Tensor, noise: torch.Tensor | None = None,
               propensity_noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        masks = self.eligibility(features)
        if self.kind == "sb3":
            actions, propensity = self.selector(self.scorer(features), masks, noise)
        else:
            masked_mean, var = self.scorer(features, masks)
            actions, propensity = self.selector(masked_mean, var, noise, propensity_noise)
        # a renormalised probability can round to 1 + 2e-16; logged feedback requires <= 1
        return actions, propensity.clamp(max=1.0)


class _Greedy(nn.Module):
    def __init__(self, inner: DecisionModule):
        super().__init__()
        self.inner = inner

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.decide(features)


class _WithNoise(_Greedy):
    def forward(self, features: torch.Tensor,  # type: ignore[override]
                noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.decide(features, noise)


class _WithPropensityNoise(_Greedy):
    def forward(self, features: torch.Tensor, noise: torch.Tensor,  # type: ignore[override]
                propensity_noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.decide(features, noise, propensity_noise)


def exported(module: DecisionModule) -> nn.Module:
    """The module with a fixed positional signature for ``torch.export`` / ONNX."""
    return (_Greedy, _WithNoise, _WithPropensityNoise)[module.n_noise_inputs](module).eval()
