"""``Rapport/Population-v0``: a natively batched customer population, one row per customer."""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.kpis import EpisodeKPIs
from envs.observation import FEATURE_NAMES, observation_bounds
from envs.scenario import Scenario
from envs.simulator import Simulator

_MODES = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP}


class PopulationEnv(VectorEnv):
    """A customer base that a marketer acts on week by week.

    ## Description
    Each row is one customer of a non-contractual business. While (latently) alive a customer
    buys as a Poisson process with a heterogeneous weekly rate and drops out with a heterogeneous
    probability after each repeat purchase (BG/NBD); each order's value follows Gamma-Gamma. The
    defaults are the published CDNOW estimates, and with marketing off the process *is* that
    model. Marketing adds log-rate terms: contacts on five channels (email, SMS, push, direct
    mail, paid media) with per-customer responsiveness, consent and a fatigue stock per channel;
    offers (discounts paid on every redeemed order, with reference prices, a post-promotion dip
    and deal conditioning; product-category recommendations that help only if they match the
    customer's hidden taste; a service gesture that lowers drop-out); and per-person paid-media
    spend with a saturating Hill response. Fatigue lowers response, raises the opt-out hazard
    (opting out is permanent) and, above a tolerance, drives latent drop-out. Randomness is
    counter-based: a customer's noise depends only on (seed, customer index, episode, week,
    mechanism), so policies compared with the same seed meet the same customers and the same luck.

    ## Action space
    ``MultiDiscrete([6, 8, 4])`` per customer (batched: shape (num_envs, 3)):

    | dim | meaning | values |
    |---|---|---|
    | 0 | channel | 0 no contact, 1 email, 2 sms, 3 push, 4 direct_mail, 5 paid_media |
    | 1 | offer | 0 none, 1-3 discount 10/20/30 %, 4-6 recommend category 0-2, 7 service gesture |
    | 2 | paid-media spend | level 0-3 = $0, 0.25, 0.5, 1.0 per person per week |

    All zeros means "do nothing". An offer travels only with a contact on a reachable channel.
    Actions on an opted-out channel are legal but cost nothing and do nothing;
    ``info["action_mask"]`` (bool, (num_envs, 18), the per-dimension masks concatenated) marks the
    useful ones. An action outside the space raises ``ValueError``.

    ## Observation space
    ``Box(float32, (29,))`` per customer, observable history only (columns: ``feature_names``):

    | # | feature | meaning |
    |---|---|---|
    | 0 | recency_weeks | weeks since the last purchase (T − t_x) |
    | 1 | frequency | repeat purchases x |
    | 2 | tenure_weeks | weeks since the first purchase T |
    | 3 | avg_spend | mean net order value over x + 1 orders, $ |
    | 4 | p_alive | BG/NBD P(alive given x, t_x, T) at the scenario's parameters |
    | 5-9 | optin_<channel> | 1 if reachable on the channel |
    | 10-14 | weeks_since_contact_<channel> | capped at 52 |
    | 15-19 | contacts_4w_<channel> | delivered contacts in the last 4 weeks |
    | 20 | weeks_since_offer | capped at 52 |
    | 21 | offers_8w | weeks with a delivered offer in the last 8 |
    | 22 | redemptions_8w | weeks with a redeemed discount in the last 8 |
    | 23-27 | stage_<stage> | one-hot lifecycle stage: new, active, at_risk, lapsed, reactivated |
    | 28 | horizon_progress | week / horizon |

    Latent truth (alive, rates, responsiveness, preferences, reference price) is never observed;
    it is in ``info["latent"]`` for analysis and oracles.

    ## Rewards
    Each customer's weekly profit: net revenue (after discounts) − cost of goods ((1 − gross
    margin) × list-price revenue, so a discount comes out of margin in full) − contact costs
    (incl. service gestures) − paid-media spend. ``info`` carries the components per customer:
    ``revenue, orders, contact_cost, discount_cost, media_cost, channel, offer, opted_out``.

    ## Starting state
    Each customer's tenure is uniform on ``scenario.initial_tenure_weeks`` (retail: 0-104) and
    their purchase history over it is drawn exactly from BG/NBD and Gamma-Gamma; consent per
    channel with the scenario's opt-in shares (everyone reachable somewhere); no fatigue.

    ## Episode end
    *Truncated* at ``horizon`` weeks (all rows together). *Terminated* only when a customer has
    opted out of every channel, so no action can reach them. Latent death never ends an episode
    (a marketer cannot see it). Autoreset: ``"next_step"`` (Gymnasium's default: the step after a
    row is done resets it, with reward 0 and its action ignored) or ``"same_step"`` (done rows are
    reset at once; their last observation is in ``info["final_obs"]``, a (num_envs, 29) array, with
    ``info["_final_obs"]`` marking the rows).

    ## Arguments
    ``num_envs`` customers (≥ 1); ``scenario`` a preset name (``retail``), a path to a scenario
    JSON file, or a :class:`envs.Scenario`; ``horizon`` weeks (default 52; ``max_episode_steps``
    is accepted as an alias, as ``make_vec`` passes it); ``autoreset_mode``; ``customer_offset``:
    global index of row 0 (for shards: rows keep their identity and noise); ``include_latent``
    (add ``info["latent"]``); ``copy_obs`` (default True: every step returns a new array; False:
    a view of one buffer that the next ``step``/``reset`` overwrites, as ``SyncVectorEnv(copy=False)``,
    which is faster for large populations).

    ## Version history
    * v0: initial release.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1000, scenario: str | Scenario = "retail", horizon: int = 52,
                 autoreset_mode: str | AutoresetMode = "next_step", customer_offset: int = 0,
                 include_latent: bool = True, copy_obs: bool = True,
                 max_episode_steps: int | None = None, render_mode: str | None = None):
        if max_episode_steps is not None:
            horizon = max_episode_steps
        self.sim = Simulator(scenario, num_envs, horizon, customer_offset)
        self.copy_obs = bool(copy_obs)
        self._obs_buf: np.ndarray | None = None
        mode = _MODES.get(autoreset_mode, autoreset_mode) if isinstance(autoreset_mode, str) \
            else autoreset_mode
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset_mode must be one of {sorted(_MODES)}, got {autoreset_mode!r}")
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.autoreset_mode = mode
        self.render_mode = render_mode
        self.include_latent = include_latent
        self.num_envs = self.sim.n
        low, high = observation_bounds(self.sim.model)
        self.single_observation_space = spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = spaces.MultiDiscrete(self.sim.model.nvec)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.kpis = EpisodeKPIs(self.sim.model.n_channels)
        self._needs_reset = np.zeros(self.num_envs, bool)
        self._started = False

    # ---- schema for agents (injected by the composition root; agents never import envs) ----
    @property
    def feature_names(self) -> tuple[str, ...]:
        return FEATURE_NAMES

    @property
    def channel_names(self) -> tuple[str, ...]:
        return self.sim.scenario.channel_names

    @property
    def offer_names(self) -> tuple[str, ...]:
        return self.sim.scenario.offers.names

    @property
    def spend_levels(self) -> tuple[float, ...]:
        return tuple(self.sim.scenario.media.spend_levels)

    @property
    def channel_costs(self) -> tuple[float, ...]:
        return tuple(c.cost for c in self.sim.scenario.channels)

    @property
    def offer_discounts(self) -> tuple[float, ...]:
        return tuple(float(d) for d in self.sim.model.offer_discount)

    @property
    def scenario(self) -> Scenario:
        return self.sim.scenario

    @property
    def horizon(self) -> int:
        return self.sim.horizon

    def _observe(self) -> np.ndarray:
        """A fresh observation array, or (copy_obs=False) a view of one reused buffer: fresh
        100 MB arrays at 10^6 customers cost more in page faults than computing the features."""
        if self.copy_obs:
            return self.sim.observe()
        if self._obs_buf is None:
            self._obs_buf = np.empty((len(FEATURE_NAMES), self.num_envs), np.float32)
        return self.sim.observe(self._obs_buf)

    # ---- Gymnasium API -----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.sim.reset(seed)
        self._needs_reset[:] = False
        self._started = True
        self.kpis.reset()
        return self._observe(), self.sim.info(None, self.include_latent)

    def step(self, actions):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        plan = self.sim.check_action(actions)
        n = self.num_envs
        if self.autoreset_mode == AutoresetMode.NEXT_STEP and self._needs_reset.all():
            self.reset()  # every row was done (the horizon): a pure reset step, reward 0
            obs, info = self._observe(), self.sim.info(None, self.include_latent)
            return obs, np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool), info

        restart = np.flatnonzero(self._needs_reset)
        if restart.size:  # rows done last step: their action is ignored, reward 0
            plan[:, restart] = 0
        out = self.sim.step(plan)
        if restart.size:
            self._zero_rows(out, restart)
            self.sim.state.episode[restart] += 1
            self.sim.reset_rows(restart)
        self.kpis.add(out)

        terminated = self.sim.unreachable()
        truncated = self.sim.at_horizon() & ~terminated
        done = terminated | truncated
        if restart.size:
            terminated[restart] = truncated[restart] = False
            done[restart] = False
        obs = self._observe()
        info = self.sim.info(out, self.include_latent)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._needs_reset = done
        elif done.any():
            info["final_obs"] = np.array(obs)
            info["_final_obs"] = done
            rows = np.flatnonzero(done)
            self.sim.state.episode[rows] += 1
            self.sim.reset_rows(rows)
            obs = self._observe()
            info["action_mask"] = self.sim.action_mask()
            if rows.size == n:
                self.kpis.reset()
        return obs, out.profit, terminated, truncated, info

    @staticmethod
    def _zero_rows(out, rows: np.ndarray) -> None:
        for name in ("profit", "revenue", "orders", "discount_cost", "contact_cost", "media_cost",
                     "channel", "offer", "opted_out", "dropped_out"):
            getattr(out, name)[rows] = 0

    # ---- analysis helpers -----------------------------------------------------------------
    def expected_myopic_profit(self, actions: np.ndarray) -> np.ndarray:
        """Latent-truth expected profit this week of ``actions`` (n, 3), per customer.

        For oracle policies and regret; reads latent state, so never give it to a real policy.
        """
        return self.sim.expected_myopic_profit(actions)

    def state_bytes_per_customer(self) -> float:
        return self.sim.state.nbytes() / self.num_envs
