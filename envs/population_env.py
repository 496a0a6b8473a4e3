"""``Rapport/Population-v0``: a natively batched customer population, one row per customer."""

from __future__ import annotations

import sys

import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rapport.envs.creative import CatalogueView
from rapport.envs.kpis import EpisodeKPIs
from rapport.envs.lookahead import Continuation, lookahead_values
from rapport.envs.observation import FEATURE_NAMES, observation_bounds
from rapport.envs.scenario import Scenario
from rapport.envs.simulator import Simulator
from rapport.envs.value import check_discount, residual_value

_OBS_POOL_SIZE = 3
"""Observation buffers kept for recycling (one the caller holds, one being built, one spare)."""

_MODES = {"next_step": AutoresetMode.NEXT_STEP, "same_step": AutoresetMode.SAME_STEP}


class PopulationEnv(CatalogueView, VectorEnv):
    """A customer base that a marketer acts on week by week.

    ## Description
    Each row is one person in the market. While (latently) alive a customer buys as a Poisson
    process with a heterogeneous weekly rate and drops out with a heterogeneous probability
    after each repeat purchase (BG/NBD); each order's value follows Gamma-Gamma. The defaults are
    the published CDNOW estimates, and with marketing off the ``retail`` process *is* that model.
    Marketing adds log-rate terms: contacts on five channels (email, SMS, push, direct mail, paid
    media) with per-customer responsiveness (larger for newcomers), consent and a fatigue stock
    per channel; offers (discounts paid on every redeemed order, with reference prices, a
    post-promotion dip and deal conditioning; product-category recommendations that help only if
    they match the customer's hidden taste; a service gesture that lowers drop-out); and
    per-person paid-media spend with a saturating Hill response. Fatigue lowers response, raises
    the opt-out hazard (opting out is permanent) and, above a tolerance, drives latent drop-out.

    Scenario switches add the population-level and human mechanisms of customer-model.md
    §2.8-2.12 (each costs nothing when off; ``retail`` has them all off):

    * **mass media and fame** (``scenario.mass_media``): a weekly budget per person in the market
      (a schedule, or :meth:`set_mass_media_budget` between steps) feeds a short sales adstock and
      a slow brand-awareness stock through a Hill curve; awareness lifts every customer's rate.
      The market depends only on the budget, never on per-person actions.
    * **prospects** (``scenario.prospects``): rows that have not bought yet, reachable only
      through paid media; their first purchase depends on awareness and on the paid media that
      reaches them.
    * **people change** (``scenario.drift``): Ornstein-Uhlenbeck drift of the log rate (with the
      −σ²/2 correction, so the mean rate is unchanged) and of category tastes; rare life events.
    * **privacy backlash** (``scenario.privacy``): messages have an explicitness level (generic,
      product-based recommendation, ``personal_recommendation``); personalization based on the
      firm's noisy guess of a customer's taste can feel creepy: it costs trust, raises opt-out
      and can lower response, less so for customers who have known the firm for long.
    * **360° view** (``scenario.omnichannel``): customers buy online and in stores; with
      ``observe_offline=False`` the observation shows only online history while rewards count both.
    * **creative catalogue** (``scenario.creative.count >= 1``, :mod:`rapport.envs.creative`):
      every contact carries one of ``count`` creatives (theme, category, imagery, tone,
      explicitness; an observable embedding). Each person has a latent taste; the match
      taste·embedding scales the contact's lift, explicit creative adds privacy creepiness, and
      repeating a creative to a person wears it out (recovering over weeks without it), in a
      fixed 3-slot memory per person.
    * **contractual churn** (``scenario.purchase.dropout_process="weekly"``): sBG weekly
      cancellation, observed by the firm, with a weekly subscription fee; contacts can remind
      subscribers to cancel (``media.reminder_dropout``).

    Presets (``envs.PRESETS``; each has a one-line ``description``): ``retail``,
    ``subscription``, ``fame``, ``privacy_sensitive``. Randomness is counter-based: a
    customer's noise depends only on (seed, customer index, episode, week, mechanism), so
    policies compared with the same seed meet the same customers and the same luck.

    ## Action space
    ``MultiDiscrete([6, 8, 4])`` per customer in ``retail`` (batched: shape (num_envs, 3)):

    | dim | meaning | values |
    |---|---|---|
    | 0 | channel | 0 no contact, 1 email, 2 sms, 3 push, 4 direct_mail, 5 paid_media |
    | 1 | offer | 0 none, 1-3 discount 10/20/30 %, 4-6 recommend category 0-2, 7 service gesture |
    | 2 | paid-media spend | level 0-3 = $0, 0.25, 0.5, 1.0 per person per week |

    The offer list comes from the scenario (``offer_names``): ``privacy_sensitive`` adds
    ``personal_recommendation`` before ``service_gesture`` (``MultiDiscrete([6, 9, 4])``).
    With a creative catalogue (``scenario.creative.count = C >= 1``) the action has a 4th column,
    the creative id ``0 … C−1`` (``MultiDiscrete([6, 8, 4, C])``), which matters only with a
    delivered contact; a 3-column action is then rejected. The firm's catalogue is
    :attr:`creative_embeddings` ((C, D) float32), :attr:`creative_feature_names` and
    :attr:`creative_attributes`; ``info["action_mask"]`` covers the first three dimensions only
    (every creative is always allowed).
    All zeros means "do nothing". An offer travels only with a contact on a reachable channel.
    Actions on an opted-out channel are legal but cost nothing and do nothing;
    ``info["action_mask"]`` (bool, (num_envs, sum(nvec)), the per-dimension masks concatenated)
    marks the useful ones. Prospects are reachable through paid media only. An action outside
    the space raises ``ValueError``.

    ## Observation space
    ``Box(float32, (32,))`` per customer, observable history only (columns: ``feature_names``):

    | # | feature | meaning |
    |---|---|---|
    | 0 | recency_weeks | weeks since the last (seen) purchase (T − t_x) |
    | 1 | frequency | repeat purchases x the firm has seen |
    | 2 | tenure_weeks | weeks since the first purchase T (0 for prospects) |
    | 3 | avg_spend | mean net order value over the x + 1 seen orders, $ |
    | 4 | p_alive | BG/NBD P(alive given x, t_x, T) at the scenario's parameters; in a contractual scenario 1 until the customer cancels, then 0 |
    | 5-9 | optin_<channel> | 1 if reachable on the channel |
    | 10-14 | weeks_since_contact_<channel> | capped at 52 |
    | 15-19 | contacts_4w_<channel> | delivered contacts in the last 4 weeks |
    | 20 | weeks_since_offer | capped at 52 |
    | 21 | offers_8w | weeks with a delivered offer in the last 8 |
    | 22 | redemptions_8w | weeks with a redeemed discount in the last 8 |
    | 23-27 | stage_<stage> | one-hot lifecycle stage: new, active, at_risk, lapsed, reactivated (all 0 for prospects) |
    | 28 | horizon_progress | week / horizon |
    | 29 | prospect | 1 if the person has not bought yet |
    | 30 | brand_awareness | the market's awareness in [0, 1] (tracking surveys; constant without mass media) |
    | 31 | belief_category | the firm's guess of the customer's favourite category (0..K−1); a pure guess for prospects, right more often as it sees more orders, stale when tastes drift |

    With ``omnichannel.observe_offline=False`` features 0-4 (and the stage) use online orders
    only. Latent truth (alive, rates, responsiveness, tastes, trust, drift, reference price) is
    never observed; it is in ``info["latent"]`` for analysis and oracles.

    ## Rewards
    Each row's weekly profit: net revenue (after discounts, incl. subscription fees) − cost of
    goods ((1 − gross margin) × list-price revenue, so a discount comes out of margin in full) −
    contact costs (incl. service gestures) − paid-media spend − the row's share of the
    mass-media budget. ``info`` carries per-row arrays: ``revenue, orders, contact_cost,
    discount_cost, media_cost, mass_media_cost, channel, offer, opted_out, converted`` (a prospect
    made their first purchase), ``orders_offline`` (store orders; only when the scenario has
    them), ``info["creative"]`` (with a catalogue: per-row ``id`` int32, −1 where no creative
    was shown; ``match`` float32, the latent taste·embedding, 0 where none; ``wear`` float32, the
    wear-out multiplier applied, 1 where none), and ``info["market"]``, population-level scalars ``week, budget`` (the next step's),
    ``adstock, awareness``. ``info["latent"]`` (``include_latent``): ``alive, base_rate,
    p_alive_model``, after a step ``purchase_rate, dropped_out`` and ``treatment_effect`` (this
    week's expected profit of the chosen action minus that of doing nothing, under latent truth:
    myopic, so later effects through fatigue, opt-out, trust and drop-out are not in it; exactly
    0 for rows the action does not reach), and when the mechanism is on ``rate_drift, trust,
    online_share``. ``orders`` counts online and offline orders and first purchases.
    ``info["latent"]["state"]`` is the latent state *the returned observation describes* (for
    privileged critics): copies of ``alive`` (bool), ``rate`` (base weekly purchase rate),
    ``p_drop`` (drop-out probability after a repeat purchase; weekly churn in a contractual
    scenario), ``fatigue`` ((num_envs, n_channels) fatigue stocks) and, when the mechanism is on,
    ``trust`` and ``rate_drift``. With ``"same_step"`` autoreset the reset rows carry their new
    customer's state and, on a step where rows are done, ``info["latent"]["final_state"]`` holds
    the same keys for the ended episodes' last state (next to ``final_obs``); the other latent
    keys describe the week just simulated.

    ``value_discount=d`` (a weekly discount factor, e.g. ``rapport.envs.value.weekly_discount(0.10)``)
    adds ``info["residual_value"]`` (float64, (num_envs,)), from latent truth: each row's expected
    discounted future profit without further marketing (:func:`rapport.envs.value.residual_value`, the
    terminal value of ``kpi/lifetime_value_per_customer``) in the state the returned observation
    describes — after ``reset``, and after every step (for a row that is done, its last state;
    with ``"same_step"`` autoreset the reset rows carry their new customer's value and the ended
    episode's value is in ``info["final_residual_value"]``, next to ``final_obs``). It is a
    training signal (a terminal reward at the horizon, a shaping potential), never an
    observation.

    ## Starting state
    Each customer's tenure is uniform on ``scenario.initial_tenure_weeks`` (retail: 0-104) and
    their purchase history over it is drawn exactly from the purchase model (BG/NBD or sBG) and
    Gamma-Gamma; consent per channel with the scenario's opt-in shares (everyone reachable
    somewhere); no fatigue; drift states from their stationary laws; a share
    ``prospects.share`` of rows are prospects. The market starts in steady state at
    ``mass_media.reference_budget``.

    ## Episode end
    *Truncated* at ``horizon`` weeks (all rows together). *Terminated* only when a customer has
    opted out of every channel, so no action can reach them. Latent death never ends an episode
    (a marketer cannot see it). Autoreset: ``"next_step"`` (Gymnasium's default: the step after a
    row is done resets it, with reward 0 and its action ignored) or ``"same_step"`` (done rows are
    reset at once; their last observation is in ``info["final_obs"]``, a (num_envs, 32) array, with
    ``info["_final_obs"]`` marking the rows). A reset of all rows also resets the market; rows
    reset alone keep living in the same market.

    ## Arguments
    ``num_envs`` customers (≥ 1); ``scenario`` a preset name (``retail``, ``subscription``,
    ``fame``, ``privacy_sensitive``), a path to a scenario JSON file, or a :class:`envs.Scenario`;
    ``horizon`` weeks (default 52; ``max_episode_steps`` is accepted as an alias, as ``make_vec``
    passes it); ``autoreset_mode``; ``customer_offset``: global index of row 0 (for shards: rows
    keep their identity and noise); ``include_latent`` (add ``info["latent"]``);
    ``treatment_effect`` (default True: with ``include_latent``, compute
    ``info["latent"]["treatment_effect"]``, ~5 % of a step at 10^6 rows); ``copy_obs`` (default
    True: every step returns a new array; False: a view of one buffer that the next
    ``step``/``reset`` overwrites, as ``SyncVectorEnv(copy=False)``, which is faster for large
    populations); ``value_discount`` (see Rewards). Between steps: :meth:`set_mass_media_budget`; read :attr:`mass_media_budget`
    and :attr:`brand_awareness`.

    ## Version history
    * v0: initial release.
    * v0, revision 2 (issue 3): features 29-31 appended (earlier indices unchanged); info keys
      ``mass_media_cost``, ``converted``, ``orders_offline``, ``market`` and latent
      ``treatment_effect``, ``rate_drift``, ``trust``, ``online_share``; presets
      ``subscription``, ``fame``, ``privacy_sensitive``. ``retail`` changed its marketing
      response (e-mail median 0.45 → 0.60, newcomer boost, pantry effect 0.5 → 0.2) to replicate
      the Hillstrom and promotion-dip experiments; with marketing off it is unchanged.
    * v0, revision 3 (issue 15): ``scenario.creative`` (off by default: outputs unchanged); with a
      catalogue the action gains the creative column, ``info["creative"]`` and the catalogue
      properties appear.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 1000, scenario: str | Scenario = "retail", horizon: int = 52,
                 autoreset_mode: str | AutoresetMode = "next_step", customer_offset: int = 0,
                 include_latent: bool = True, copy_obs: bool = True,
                 max_episode_steps: int | None = None, render_mode: str | None = None,
                 treatment_effect: bool = True, value_discount: float | None = None):
        if max_episode_steps is not None:
            horizon = max_episode_steps
        self.sim = Simulator(scenario, num_envs, horizon, customer_offset)
        self.copy_obs = bool(copy_obs)
        self._obs_buf: np.ndarray | None = None
        self._obs_pool: list[np.ndarray] = []
        mode = _MODES.get(autoreset_mode, autoreset_mode) if isinstance(autoreset_mode, str) \
            else autoreset_mode
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset_mode must be one of {sorted(_MODES)}, got {autoreset_mode!r}")
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.autoreset_mode = mode
        self.render_mode = render_mode
        self.include_latent = include_latent
        self.treatment_effect = bool(treatment_effect)
        self.value_discount = None if value_discount is None else \
            check_discount("value_discount", value_discount)
        self.num_envs = self.sim.n
        low, high = observation_bounds(self.sim.model)
        self.single_observation_space = spaces.Box(low, high, dtype=np.float32)
        self.single_action_space = spaces.MultiDiscrete(self.sim.action_nvec)
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

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_obs_pool"] = []  # scratch memory, not state: keeps pickles small
        return state

    def _observe(self) -> np.ndarray:
        """A fresh observation array, or (copy_obs=False) a view of one reused buffer: fresh
        100 MB arrays at 10^6 customers cost more in page faults than computing the features.

        With ``copy_obs`` the array is "fresh" in the sense that matters: a buffer is recycled
        only when nothing outside the env references it any more (the caller dropped every view
        of an earlier observation), so an observation someone still holds is never overwritten.
        """
        if not self.copy_obs:
            if self._obs_buf is None:
                self._obs_buf = np.empty((len(FEATURE_NAMES), self.num_envs), np.float32)
            return self.sim.observe(self._obs_buf)
        pool = self._obs_pool
        for i in range(len(pool)):
            # references: the pool's slot and getrefcount's argument; any view handed out adds one
            if sys.getrefcount(pool[i]) == 2:
                return self.sim.observe(pool[i])
        buf = np.empty((len(FEATURE_NAMES), self.num_envs), np.float32)
        if len(pool) < _OBS_POOL_SIZE:
            pool.append(buf)
        return self.sim.observe(buf)

    # ---- Gymnasium API -----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self.sim.reset(seed)
        self._needs_reset[:] = False
        self._started = True
        self.kpis.reset()
        info = self.sim.info(None, self.include_latent)
        self._add_value(info)
        self._add_latent_state(info)
        return self._observe(), info

    def step(self, actions):
        if not self._started:
            raise RuntimeError("call reset() before step()")
        plan, creative = self.sim.check_plan(actions)
        n = self.num_envs
        if self.autoreset_mode == AutoresetMode.NEXT_STEP and self._needs_reset.all():
            self.reset()  # every row was done (the horizon): a pure reset step, reward 0
            obs, info = self._observe(), self.sim.info(None, self.include_latent)
            self._add_value(info)
            self._add_latent_state(info)
            return obs, np.zeros(n, np.float32), np.zeros(n, bool), np.zeros(n, bool), info

        restart = np.flatnonzero(self._needs_reset)
        if restart.size:  # rows done last step: their action is ignored, reward 0
            plan[:, restart] = 0
        out = self.sim.step(plan, treatment_effect=self.include_latent and self.treatment_effect,
                            creative=creative)
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
        self._add_value(info)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            self._needs_reset = done
        elif done.any():
            info["final_obs"] = np.array(obs)
            info["_final_obs"] = done
            rows = np.flatnonzero(done)
            if self.include_latent:
                info["latent"]["final_state"] = self._latent_state()
            self.sim.state.episode[rows] += 1
            self.sim.reset_rows(rows)
            obs = self._observe()
            info["action_mask"] = self.sim.action_mask()
            if self.value_discount is not None:
                info["final_residual_value"] = info["residual_value"].copy()
                info["residual_value"][rows] = residual_value(
                    self.sim.scenario, self.sim.state, rows, self.value_discount)
            if rows.size == n:
                self.kpis.reset()
        self._add_latent_state(info)
        return obs, out.profit, terminated, truncated, info

    def _latent_state(self) -> dict[str, np.ndarray]:
        """Copies of the latent state variables (see Rewards: ``info["latent"]["state"]``)."""
        s = self.sim.state
        state = {"alive": s.alive.copy(), "rate": s.rate.copy(), "p_drop": s.p_drop.copy(),
                 "fatigue": s.fatigue.copy().T}  # (n, C) view of a (C, n) copy: no strided copy
        if s.trust.size:
            state["trust"] = s.trust.copy()
        if s.rate_drift.size:
            state["rate_drift"] = s.rate_drift.copy()
        return state

    def _add_latent_state(self, info: dict) -> None:
        if self.include_latent:
            info["latent"]["state"] = self._latent_state()

    def _add_value(self, info: dict) -> None:
        if self.value_discount is not None:
            info["residual_value"] = residual_value(self.sim.scenario, self.sim.state, None,
                                                    self.value_discount)

    @staticmethod
    def _zero_rows(out, rows: np.ndarray) -> None:
        for name in ("profit", "revenue", "orders", "discount_cost", "contact_cost", "media_cost",
                     "mass_media_cost", "channel", "offer", "opted_out", "converted", "dropped_out",
                     "orders_offline", "treatment_effect"):
            value = getattr(out, name)
            if value is not None:
                value[rows] = 0

    # ---- population-level controls (the same for every customer) ---------------------------
    def set_mass_media_budget(self, budget: float | None) -> None:
        """Spend ``budget`` dollars per person on mass media each week from the next step on
        (``None``: back to the scenario's ``mass_media.budget_schedule``). It lasts across
        resets; the market's stocks restart from steady state at the reference budget on reset.

        Raises ``ValueError`` for a negative or non-finite budget, or a scenario without mass media.
        """
        self.sim.set_mass_media_budget(budget)

    @property
    def mass_media_budget(self) -> float:
        """The budget the next step spends, $ per person."""
        return self.sim.market.budget() if self.sim.market.enabled else 0.0

    @property
    def brand_awareness(self) -> float:
        """The market's brand awareness going into the next step (feature ``brand_awareness``)."""
        return float(self.sim.market.awareness)

    # ---- analysis helpers -----------------------------------------------------------------
    def expected_myopic_profit(self, actions: np.ndarray) -> np.ndarray:
        """Latent-truth expected profit this week of ``actions`` (n, 3), per customer.

        For oracle policies and regret; reads latent state, so never give it to a real policy.
        """
        return self.sim.expected_myopic_profit(actions)

    def lookahead_values(self, candidates: np.ndarray, continuation: Continuation, *, weeks: int = 8,
                         samples: int = 4, annual_discount_rate: float = 0.10, seed: int = 0,
                         weighted_survival: bool = True) -> np.ndarray:
        """Latent-truth expected lifetime value ``(n, K)`` of each candidate action ``(K, 3)``
        taken now and ``continuation`` (obs, mask -> actions) after it, by simulated rollouts
        on fresh common random numbers (:func:`rapport.envs.lookahead.lookahead_values`).

        For the long-term oracle; reads latent state, so never give it to a real policy. The
        env's own state and randomness are unchanged.
        """
        return lookahead_values(self.sim, candidates, continuation, weeks=weeks, samples=samples,
                                annual_discount_rate=annual_discount_rate, seed=seed,
                                weighted_survival=weighted_survival)

    def state_bytes_per_customer(self) -> float:
        return self.sim.state.nbytes() / self.num_envs
