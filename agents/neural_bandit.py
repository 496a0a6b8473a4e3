"""Neural-linear Thompson sampling: a small MLP learns the features, a Bayesian linear head per
arm explores on top of them (Riquelme, Tucker & Snoek 2018, "Deep Bayesian Bandits Showdown").

Why this one: it handles reward surfaces no linear model can (interactions, thresholds) while
keeping the exact, cheap posterior of :mod:`rapport.agents.bandits` for exploration and propensities.

* **Representation.** ``φ(x) = MLP((x - μ) / σ)`` (ReLU layers ``hidden`` then an
  ``embedding_dim`` ReLU layer), trained by Adam on the squared error of a linear output head per
  arm, on the arm actually played, with rewards standardised. ``μ, σ`` are the replay buffer's
  feature mean/std at the last retraining.
* **Posterior.** A :class:`rapport.agents.bandits.DisjointRidge` per arm on ``φ(x)`` — the same
  sufficient statistics, standardisation and Thompson rule as :class:`rapport.agents.bandits.LinearThompson`.
* **Schedule.** Every ``retrain_every`` new observations the MLP is trained for ``train_steps``
  minibatches (warm start), then the ridge statistics are rebuilt from the whole replay buffer
  (at most ``buffer_size`` most recent observations) under the new features. In between, new
  observations go into the buffer and, embedded with the current φ, into the ridge statistics.

Learner ≠ policy: :meth:`NeuralLinearThompson.policy` returns a frozen
:class:`NeuralLinearPolicy` (a copy of the network and the linear head). Persistence:
:meth:`NeuralLinearThompson.state_dict` / :meth:`~NeuralLinearThompson.save` (numpy arrays only:
network weights, buffer, ridge statistics; the Adam moments are not kept, so training resumes
with a fresh optimiser).

Randomness: the network's initialisation and minibatch draws come from ``seed`` (torch's global
generator is left untouched); exploration draws come from the ``rng`` passed to ``act``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rapport.agents.bandits import (
    DisjointRidge,
    GreedyRule,
    LinearFit,
    RewardSpec,
    ThompsonRule,
    _check_state_schema,
    _choose,
    arm_feedback,
    load_state,
    resolve_reward,
    reward_from_dict,
    reward_to_dict,
    rule_from_dict,
    rule_to_dict,
    save_state,
)
from rapport.agents.hyperparams import check_count, check_real
from rapport.agents.protocol import DecisionSchema
from rapport.agents.validation import (
    CheckedBatch,
    GuardedPolicy,
    all_joint_actions,
    check_arms,
    check_obs,
    joint_index,
)

ExplorationRule = GreedyRule | ThompsonRule


def _mlp(n_in: int, hidden: Sequence[int], embedding_dim: int, n_arms: int) -> tuple[nn.Module, nn.Module]:
    layers: list[nn.Module] = []
    width = n_in
    for h in (*hidden, embedding_dim):
        layers += [nn.Linear(width, int(h)), nn.ReLU()]
        width = int(h)
    return nn.Sequential(*layers), nn.Linear(width, n_arms)


class FeatureNet:
    """The frozen feature map ``φ(x) = body((x - mean) / std)``, numpy in, float32 numpy out."""

    def __init__(self, body: nn.Module, mean: np.ndarray, std: np.ndarray) -> None:
        self.body = body.eval()
        self.mean, self.std = mean.astype(np.float32), std.astype(np.float32)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray((obs - self.mean) / self.std, dtype=np.float32))
        with torch.no_grad():
            return self.body(x).numpy()


class NeuralLinearPolicy(GuardedPolicy):
    """Frozen neural-linear policy: embed with a copy of the network, score with the linear head,
    choose with ``rule`` (greedy by default). Rows where no candidate arm is allowed get
    do-nothing (``stats["no_candidate_rows"]``)."""

    def __init__(self, schema: DecisionSchema, arms: np.ndarray, features: FeatureNet, fit: LinearFit,
                 rule: ExplorationRule) -> None:
        super().__init__(schema)
        self.arms, self.features, self.fit, self.rule = arms, features, fit, rule
        self.stats["no_candidate_rows"] = 0

    def expected_rewards(self, obs: np.ndarray) -> np.ndarray:
        """(n, K) predicted reward of every candidate arm."""
        return self.fit.predict(self.features(check_obs(obs, self.schema)), False)[0]

    def _decide(self, batch: CheckedBatch, rng: np.random.Generator):
        return _choose(self.fit, self.rule, self.features(batch.obs), self.arms, batch, rng, self.stats)


class NeuralLinearThompson:
    """Learner: neural features + per-arm Bayesian linear heads with Thompson sampling.

    Parameters
    ----------
    schema : DecisionSchema
    hidden : hidden layer widths of the MLP before the embedding layer.
    embedding_dim : width of the learned feature vector φ(x) the linear heads see.
    v, scale_by_noise, propensity_draws : Thompson rule (see :class:`rapport.agents.bandits.ThompsonRule`).
    arms : (K, 3) candidate joint actions; default all ``prod(nvec)``.
    ridge : ridge penalty of the linear heads (on standardised φ).
    retrain_every : new observations between MLP retrainings.
    train_steps, batch_size, learning_rate : Adam minibatch steps per retraining, their size and step.
    buffer_size : replay buffer capacity (most recent observations).
    seed : network initialisation and minibatch sampling.
    torch_threads : ``torch.set_num_threads`` (process-wide) at construction; None leaves it.
    reward, value_discount : reward of :meth:`update_from_step`: ``"profit"`` (default) or
        ``"lifetime_value_shaped"`` at weekly discount ``value_discount`` (see
        :mod:`rapport.agents.bandit_rewards`).
    """

    def __init__(self, schema: DecisionSchema, *, hidden: Sequence[int] = (64,), embedding_dim: int = 16,
                 v: float = 1.0, scale_by_noise: bool = True, propensity_draws: int = 64,
                 arms: np.ndarray | Sequence[Sequence[int]] | None = None, ridge: float = 1.0,
                 retrain_every: int = 2000, train_steps: int = 100, batch_size: int = 256,
                 learning_rate: float = 3e-3, buffer_size: int = 50_000, seed: int = 0,
                 torch_threads: int | None = 1, reward: RewardSpec = None,
                 value_discount: float | None = None) -> None:
        for name, value in (("embedding_dim", embedding_dim), ("retrain_every", retrain_every),
                            ("train_steps", train_steps), ("batch_size", batch_size), ("buffer_size", buffer_size)):
            check_count(name, value, minimum=1)
        for width in hidden:
            check_count("hidden (each layer width)", width, minimum=1)
        check_real("learning_rate", learning_rate, minimum=0.0, exclusive=True, meaning="Adam step size")
        if torch_threads is not None and torch.get_num_threads() != torch_threads:
            torch.set_num_threads(int(torch_threads))
        self.schema, self.reward = schema, resolve_reward(schema, reward, value_discount)
        self.arms = check_arms(all_joint_actions(schema.nvec) if arms is None else arms, schema.nvec)
        self.rule = ThompsonRule(v, scale_by_noise, propensity_draws)
        self.config = {"hidden": [int(h) for h in hidden], "embedding_dim": int(embedding_dim), "ridge": float(ridge),
                       "retrain_every": int(retrain_every), "train_steps": int(train_steps),
                       "batch_size": int(batch_size), "learning_rate": float(learning_rate),
                       "buffer_size": int(buffer_size), "seed": int(seed)}
        self._arm_of = np.full(schema.n_joint_actions, -1, np.int64)
        self._arm_of[joint_index(self.arms, schema.nvec)] = np.arange(len(self.arms))
        d = schema.n_features
        self._buf_obs = np.zeros((buffer_size, d), np.float32)
        self._buf_arm = np.zeros(buffer_size, np.int64)
        self._buf_reward = np.zeros(buffer_size, np.float64)
        self._size = self._next = self._since_retrain = self.n_retrains = 0
        self._np_rng = np.random.default_rng(seed)
        with torch.random.fork_rng():  # initialise from `seed` without touching torch's global stream
            torch.manual_seed(seed)
            self._body, self._head = _mlp(d, hidden, embedding_dim, len(self.arms))
        self._features = FeatureNet(self._body, np.zeros(d), np.ones(d))
        self.ridge = DisjointRidge(embedding_dim, len(self.arms), ridge)
        self.stats: dict[str, int] = {"all_forbidden_rows": 0, "no_candidate_rows": 0, "skipped_updates": 0}
        self._current: NeuralLinearPolicy | None = None

    # ---- acting and learning ----------------------------------------------------------------
    def _frozen(self, rule: ExplorationRule, copy_net: bool) -> NeuralLinearPolicy:
        features = self._features
        if copy_net:
            features = FeatureNet(copy.deepcopy(self._body), features.mean, features.std)
        return NeuralLinearPolicy(self.schema, self.arms.copy() if copy_net else self.arms, features,
                                  self.ridge.fit(), rule)

    def act(self, obs: np.ndarray, rng: np.random.Generator, *,
            action_mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self._current is None:
            self._current = self._frozen(self.rule, copy_net=False)
            self._current.stats = self.stats
        return self._current.act(obs, rng, action_mask=action_mask)

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        """Learn from (n, d) contexts, (n, 3) actions taken and (n,) rewards observed."""
        obs, arm, rewards = arm_feedback(self.schema, self._arm_of, self.stats, obs, actions, rewards)
        self._remember(obs, arm, rewards)
        self._since_retrain += len(arm)
        if self._since_retrain >= self.config["retrain_every"] and self._size >= self.config["batch_size"]:
            self.retrain()
        else:
            self.ridge.add(self._features(obs).astype(np.float64), arm, rewards)
        self._current = None

    def update_from_step(self, obs: np.ndarray, actions: np.ndarray, profit: np.ndarray,
                         next_obs: np.ndarray, *, value: np.ndarray | None = None,
                         next_value: np.ndarray | None = None) -> None:
        """:meth:`update` with the configured reward (``reward``) of one env step (``value``,
        ``next_value``: the rows' residual values before and after it, for the shaped reward)."""
        self.update(obs, actions, profit if self.reward is None else self.reward(profit, value, next_value))

    def _remember(self, obs: np.ndarray, arm: np.ndarray, rewards: np.ndarray) -> None:
        cap = len(self._buf_arm)
        if len(arm) >= cap:
            obs, arm, rewards = obs[-cap:], arm[-cap:], rewards[-cap:]
        slots = (self._next + np.arange(len(arm))) % cap
        self._buf_obs[slots], self._buf_arm[slots], self._buf_reward[slots] = obs, arm, rewards
        self._next = int((self._next + len(arm)) % cap)
        self._size = min(cap, self._size + len(arm))

    def retrain(self) -> None:
        """Fit the MLP on the replay buffer, then rebuild the linear heads under the new φ."""
        cfg = self.config
        obs, arm, reward = self._buf_obs[:self._size], self._buf_arm[:self._size], self._buf_reward[:self._size]
        mean, std = obs.mean(axis=0), obs.std(axis=0)
        std = np.where(std > 1e-6 * (1.0 + np.abs(mean)), std, 1.0)
        r_mean, r_std = reward.mean(), max(float(reward.std()), 1e-8)
        x = torch.from_numpy(((obs - mean) / std).astype(np.float32))
        y = torch.from_numpy(((reward - r_mean) / r_std).astype(np.float32))
        a = torch.from_numpy(arm)
        params = [*self._body.parameters(), *self._head.parameters()]
        optimiser = torch.optim.Adam(params, lr=cfg["learning_rate"])
        self._body.train()
        for _ in range(cfg["train_steps"]):
            idx = torch.from_numpy(self._np_rng.integers(0, self._size, min(cfg["batch_size"], self._size)))
            pred = self._head(self._body(x[idx])).gather(1, a[idx, None])[:, 0]
            loss = torch.mean((pred - y[idx]) ** 2)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        self._features = FeatureNet(self._body, mean, std)
        self.ridge = DisjointRidge(cfg["embedding_dim"], len(self.arms), cfg["ridge"])
        self.ridge.add(self._features(obs).astype(np.float64), arm, reward)
        self._since_retrain = 0
        self.n_retrains += 1
        self._current = None

    def policy(self, explore: bool = False) -> NeuralLinearPolicy:
        """A frozen standalone policy (own copy of the network): greedy by default, or with the
        Thompson rule (for logging data under a fixed policy)."""
        return self._frozen(self.rule if explore else GreedyRule(), copy_net=True)

    # ---- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Numpy arrays and JSON-friendly scalars: config, network weights (``net.*``), input
        standardisation, replay buffer, ridge statistics and counters."""
        state: dict[str, Any] = {
            "kind": "neural_linear_thompson", "config": dict(self.config), "rule": rule_to_dict(self.rule),
            "arms": self.arms.copy(), "feature_names": list(self.schema.feature_names),
            "nvec": list(self.schema.nvec), "stats": dict(self.stats), "reward": reward_to_dict(self.reward),
            "counters": {"size": self._size, "next": self._next, "since_retrain": self._since_retrain,
                         "n_retrains": self.n_retrains},
            "input_mean": self._features.mean.copy(), "input_std": self._features.std.copy(),
            "buffer_obs": self._buf_obs[:self._size].copy(),
            "buffer_arm": self._buf_arm[:self._size].copy(), "buffer_reward": self._buf_reward[:self._size].copy(),
            "ridge_moments": self.ridge.moments.copy(),
        }
        for prefix, module in (("net.body.", self._body), ("net.head.", self._head)):
            for name, tensor in module.state_dict().items():
                state[prefix + name] = tensor.detach().cpu().numpy().copy()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output into a learner built with the same config."""
        _check_state_schema(state, self.schema)
        if dict(state["config"]) != self.config:
            raise ValueError(f"saved config {dict(state['config'])} differs from this learner's {self.config}; "
                             "build it with NeuralLinearThompson.load(path, schema)")
        if not np.array_equal(np.asarray(state["arms"]), self.arms):
            raise ValueError("saved candidate arms differ from this learner's")
        self.rule = rule_from_dict(state["rule"])
        self.reward = reward_from_dict(self.schema, state.get("reward"))
        for prefix, module in (("net.body.", self._body), ("net.head.", self._head)):
            module.load_state_dict({k[len(prefix):]: torch.from_numpy(np.asarray(v)) for k, v in state.items()
                                    if k.startswith(prefix)})
        self._features = FeatureNet(self._body, np.asarray(state["input_mean"]), np.asarray(state["input_std"]))
        c = state["counters"]
        size = int(c["size"])
        self._buf_obs[:size] = state["buffer_obs"][:size]
        self._buf_arm[:size], self._buf_reward[:size] = state["buffer_arm"], state["buffer_reward"]
        self._size, self._next, self._since_retrain = size, int(c["next"]), int(c["since_retrain"])
        self.n_retrains = int(c["n_retrains"])
        self.ridge.moments[:] = state["ridge_moments"]
        self.stats = {**self.stats, **{k: int(v) for k, v in state["stats"].items()}}
        self._current = None

    def save(self, path: str | Path) -> Path:
        """Write :meth:`state_dict` to an ``.npz`` file (no pickle); returns the path."""
        return save_state(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, schema: DecisionSchema, *, torch_threads: int | None = 1) -> NeuralLinearThompson:
        """A learner restored from :meth:`save`."""
        state = load_state(path)
        cfg, rule = dict(state["config"]), dict(state["rule"])
        learner = cls(schema, hidden=cfg["hidden"], embedding_dim=cfg["embedding_dim"], v=rule["v"],
                      scale_by_noise=rule["scale_by_noise"], propensity_draws=rule["propensity_draws"],
                      arms=state["arms"], ridge=cfg["ridge"], retrain_every=cfg["retrain_every"],
                      train_steps=cfg["train_steps"], batch_size=cfg["batch_size"],
                      learning_rate=cfg["learning_rate"], buffer_size=cfg["buffer_size"], seed=cfg["seed"],
                      torch_threads=torch_threads)
        learner.load_state_dict(state)
        return learner
