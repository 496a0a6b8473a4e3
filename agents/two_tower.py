"""A learned two-tower creative scorer (torch, CPU): person tower on observables, creative tower on
the embedding, their dot product as the predicted reward.

* **Person tower** ``p(x) = MLP((x - μ_x) / σ_x)`` -> ``(k,)`` plus a person bias ``b_p(x)``;
  **creative tower** ``q(e) = MLP((e - μ_e) / σ_e)`` -> ``(k,)`` plus a creative bias ``b_q(e)``.
  Predicted reward ``p(x)·q(e) + b_q(e) + b_p(x)`` (the person bias does not rank creatives; it
  absorbs who is worth contacting so that the dot product is about the match). ReLU layers
  ``hidden``, output width ``dim``. ``μ_x, σ_x`` are the buffer's feature mean / std at the last
  training, ``μ_e, σ_e`` the catalogue's.
* **Training**: Adam on the squared error of standardised rewards over logged (obs, creative id,
  reward) of contacted rows: :meth:`TwoTowerCreative.fit` on a logged batch (``epochs`` passes),
  or online — :meth:`~TwoTowerCreative.update` appends to a replay buffer (the ``buffer_size``
  most recent rows) and every ``retrain_every`` new rows trains ``train_steps`` minibatches of
  ``batch_size`` (warm start).
* **Selector**: the catalogue's tower outputs are cached per training as one (C, k+1) matrix, so
  scoring a batch is the chunked float32 product of :mod:`rapport.agents.creative_bandits`.
  ``temperature = 0`` (default): greedy argmax, ties to the lowest id, propensity 1.
  ``temperature = τ > 0``: a creative drawn from ``softmax(score / τ)`` over the catalogue
  (Gumbel-max), propensity exactly that softmax probability.
* Before any training the towers are at their (seeded) initialisation — scores are arbitrary but
  deterministic; log with :class:`~rapport.agents.creative.RandomCreative` first, or explore with τ.

Learner ≠ policy: :meth:`TwoTowerCreative.policy` returns a frozen copy (greedy unless
``explore``); :meth:`~TwoTowerCreative.scoring_parameters` gives the towers and statistics an export
needs (``rapport.experiments.export.creative``). Randomness: initialisation and minibatches come
from ``seed`` (torch's global generator is left untouched); selection draws from ``rng``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from rapport.agents.creative import _Catalogue
from rapport.agents.creative_bandits import CHUNK_ELEMENTS, run_row_chunks, single_threaded_blas
from rapport.agents.hyperparams import check_count, check_real

__all__ = ["Tower", "TwoTowerCreative"]


class Tower(nn.Module):
    """``(x - mean) / std`` -> ReLU MLP -> ``dim`` outputs plus a bias (the last output column)."""

    def __init__(self, n_in: int, hidden: Sequence[int], dim: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = n_in
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, dim + 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    return mean, np.where(std > 1e-6 * (1.0 + np.abs(mean)), std, 1.0)


class TwoTowerCreative(_Catalogue):
    """Two-tower creative scorer and selector (module doc).

    Parameters
    ----------
    embeddings : (C, D) catalogue; feature_names : observation columns.
    dim : tower output width k; hidden : ReLU layer widths of both towers.
    temperature : 0 = greedy; τ > 0 = softmax(score / τ) sampling with exact propensities.
    learning_rate, batch_size, train_steps, retrain_every, buffer_size : online training (module doc).
    seed : initialisation and minibatches.
    """

    def __init__(self, embeddings: Any, feature_names: Sequence[str], *, dim: int = 16,
                 hidden: Sequence[int] = (64,), temperature: float = 0.0, learning_rate: float = 3e-3,
                 batch_size: int = 512, train_steps: int = 200, retrain_every: int = 10_000,
                 buffer_size: int = 200_000, seed: int = 0, threads: int = 1) -> None:
        super().__init__(embeddings, feature_names)
        self.dim = check_count("dim", dim, minimum=1, meaning="tower output width")
        self.hidden = tuple(check_count("hidden", h, minimum=1, meaning="hidden layer width") for h in hidden)
        self.temperature = check_real("temperature", temperature, minimum=0.0,
                                      meaning="softmax temperature in reward units; 0 = greedy")
        self.learning_rate = check_real("learning_rate", learning_rate, minimum=0.0, exclusive=True)
        self.batch_size = check_count("batch_size", batch_size, minimum=1)
        self.train_steps = check_count("train_steps", train_steps, minimum=1)
        self.retrain_every = check_count("retrain_every", retrain_every, minimum=1,
                                         meaning="new contacted rows between trainings")
        self.buffer_size = check_count("buffer_size", buffer_size, minimum=1)
        self.threads = check_count("threads", threads, minimum=1)
        self._np_rng = np.random.default_rng(seed)
        with torch.random.fork_rng():  # initialise from `seed` without touching torch's global stream
            torch.manual_seed(seed)
            self.person = Tower(self.columns.n_features, self.hidden, self.dim)
            self.creative = Tower(self.embeddings.shape[1], self.hidden, self.dim)
        self._e_torch = torch.from_numpy(np.array(self.embeddings))  # a writable copy, as torch wants
        e_mean, e_std = _stats(self.embeddings)
        self.creative.mean.copy_(torch.as_tensor(e_mean, dtype=torch.float32))
        self.creative.std.copy_(torch.as_tensor(e_std, dtype=torch.float32))
        self._optimizer = torch.optim.Adam([*self.person.parameters(), *self.creative.parameters()],
                                           lr=self.learning_rate)
        self._buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._buffered = self._since_training = 0
        self.reward_mean, self.reward_std = 0.0, 1.0
        self._refresh()

    # ---- scoring
    def _refresh(self) -> None:
        """Cache the catalogue side: (k+1, C) = [q(e); b_q(e)] for every creative."""
        with torch.no_grad():
            q = self.creative(self._e_torch).numpy()
        self._q_t = np.ascontiguousarray(q.T.astype(np.float32))

    def person_operand(self, obs: np.ndarray) -> np.ndarray:
        """(n, k+1) = [p(x), 1] (the person bias does not rank creatives)."""
        with torch.no_grad():
            p = self.person(torch.as_tensor(np.asarray(obs, np.float32))).numpy()
        p[:, -1] = 1.0
        return p

    def expected_rewards(self, obs: np.ndarray) -> np.ndarray:
        """(n, C) predicted reward in reward units (float32; small batches)."""
        from rapport.agents.validation import check_obs

        obs = check_obs(obs, self.columns)
        with torch.no_grad():
            p = self.person(torch.as_tensor(np.asarray(obs, np.float32))).numpy()
        scores = p[:, :-1] @ self._q_t[:-1] + self._q_t[-1] + p[:, -1:]
        return scores * np.float32(self.reward_std) + np.float32(self.reward_mean)

    def _choose(self, obs, rng):
        u = self.person_operand(obs)
        n, C = len(u), self.n_creatives
        ids, prop = np.empty(n, np.int64), np.ones(n)
        rows = max(1, CHUNK_ELEMENTS // C)
        tau = self.temperature / self.reward_std  # scores are in standardised reward units
        seeds = rng.integers(0, 2**63 - 1, max(1, -(-n // rows)))

        def work(lo: int, hi: int) -> None:
            buf = np.empty((rows, C), np.float32)
            with single_threaded_blas():
                for s in range(lo, hi, rows):
                    e = min(hi, s + rows)
                    scores = buf[:e - s]
                    np.matmul(u[s:e], self._q_t, out=scores)
                    if tau == 0.0:
                        ids[s:e] = scores.argmax(axis=1)
                        continue
                    scores /= np.float32(tau)
                    top = scores.max(axis=1, keepdims=True)
                    log_z = np.log(np.exp(scores - top).sum(axis=1, dtype=np.float64)) + top[:, 0]
                    chunk_rng = np.random.default_rng(seeds[s // rows])  # per chunk: thread-safe, reproducible
                    pick = (scores + chunk_rng.gumbel(size=scores.shape).astype(np.float32)).argmax(axis=1)
                    ids[s:e] = pick
                    prop[s:e] = np.exp(scores[np.arange(e - s), pick] - log_z)

        run_row_chunks(n, rows, self.threads, work)
        return ids, prop

    def creative_distribution(self, obs: np.ndarray) -> np.ndarray:
        """(n, C) probability of every creative per row (one-hot greedy, or the softmax)."""
        from rapport.agents.validation import check_obs

        u = self.person_operand(check_obs(obs, self.columns))
        scores = (u @ self._q_t).astype(np.float64)
        if self.temperature == 0.0:
            dist = np.zeros_like(scores)
            dist[np.arange(len(u)), scores.argmax(axis=1)] = 1.0
            return dist
        scores /= self.temperature / self.reward_std
        scores -= scores.max(axis=1, keepdims=True)
        dist = np.exp(scores)
        return dist / dist.sum(axis=1, keepdims=True)

    # ---- learning
    def _learn(self, obs, ids, rewards):
        self._buffer.append((np.asarray(obs, np.float32), ids, rewards))
        self._buffered += len(ids)
        self._since_training += len(ids)
        while self._buffered - len(self._buffer[0][1]) >= self.buffer_size:
            self._buffered -= len(self._buffer.pop(0)[1])
        if self._since_training >= self.retrain_every:
            self.train(self.train_steps)

    def fit(self, obs: np.ndarray, ids: np.ndarray, rewards: np.ndarray, *, epochs: int = 5) -> TwoTowerCreative:
        """Train on logged (obs, creative id, reward) of contacted rows for ``epochs`` passes; returns self."""
        epochs = check_count("epochs", epochs, minimum=1)
        retrain, self.retrain_every = self.retrain_every, 1 << 62  # buffer only, train once below
        try:
            self.update(obs, ids, rewards, np.ones(len(np.asarray(ids)), bool))
        finally:
            self.retrain_every = retrain
        self.train(max(1, epochs * -(-self._buffered // self.batch_size)))
        return self

    def train(self, steps: int) -> None:
        """``steps`` Adam minibatches on the replay buffer (statistics refreshed first)."""
        obs = np.concatenate([b[0] for b in self._buffer])
        ids = np.concatenate([b[1] for b in self._buffer])
        rewards = np.concatenate([b[2] for b in self._buffer])
        mean, std = _stats(obs)
        self.person.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.person.std.copy_(torch.as_tensor(std, dtype=torch.float32))
        self.reward_mean = float(rewards.mean())
        self.reward_std = float(rewards.std()) if rewards.std() > 0 else 1.0
        x_all, ids_t = torch.as_tensor(obs), torch.as_tensor(ids)
        y_all = torch.as_tensor(((rewards - self.reward_mean) / self.reward_std).astype(np.float32))
        for _ in range(steps):
            batch = torch.as_tensor(self._np_rng.integers(0, len(ids), min(self.batch_size, len(ids))))
            p = self.person(x_all[batch])
            q = self.creative(self._e_torch[ids_t[batch]])
            pred = (p[:, :-1] * q[:, :-1]).sum(dim=1) + p[:, -1] + q[:, -1]
            loss = torch.mean((pred - y_all[batch]) ** 2)
            self._optimizer.zero_grad()
            loss.backward()
            self._optimizer.step()
        self.last_loss = float(loss.detach())
        self._since_training = 0
        self._refresh()

    def policy(self, explore: bool = False) -> TwoTowerCreative:
        """Frozen copy (no buffer, no optimiser); greedy (temperature 0) unless ``explore``."""
        buffer, optimizer = self._buffer, self._optimizer
        self._buffer, self._optimizer = [], None
        try:
            frozen = copy.deepcopy(self)
        finally:
            self._buffer, self._optimizer = buffer, optimizer
        if not explore:
            frozen.temperature = 0.0
        frozen._buffered = frozen._since_training = 0
        frozen.retrain_every = 1 << 62  # a frozen policy does not train
        return frozen

    def scoring_parameters(self) -> dict[str, Any]:
        """The towers (state dicts, float32 tensors) and shapes an export needs (greedy decision:
        ``argmax_c p(x)[:k]·q(e_c)[:k] + q(e_c)[k]``)."""
        return {"feature_names": self.feature_names, "hidden": self.hidden, "dim": self.dim,
                "person": copy.deepcopy(self.person.state_dict()), "creative": copy.deepcopy(self.creative.state_dict()),
                "embeddings": np.array(self.embeddings)}
