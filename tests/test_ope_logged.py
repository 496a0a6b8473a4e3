"""Logged feedback: Parquet round trips and a table of invalid logs, each rejected by name."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rapport.agents.ope import InvalidFeedbackError, LoggedFeedback
from rapport.agents.ope.logged import METADATA_KEY, feedback_from_arrow
from rapport.agents.protocol import DecisionSchema

FEATURES = ("recency_weeks", "frequency", "p_alive")
NVEC = (3, 2, 2)


def make_log(n: int = 12, *, with_dist: bool = True, **overrides) -> LoggedFeedback:
    rng = np.random.default_rng(0)
    K = int(np.prod(NVEC))
    dist = rng.dirichlet(np.ones(K), n)
    joint = np.array([rng.choice(K, p=p) for p in dist])
    actions = np.stack(np.unravel_index(joint, NVEC), axis=1)
    kwargs = dict(
        feature_names=FEATURES, nvec=NVEC, customer_id=np.repeat(np.arange(n // 3), 3),
        week=np.tile(np.arange(3), n // 3), context=rng.random((n, 3)).astype(np.float32),
        actions=actions, propensity=dist[np.arange(n), joint], reward=rng.normal(size=n),
        action_dist=dist if with_dist else None, action_mask=rng.random((n, sum(NVEC))) < 0.8,
        metadata={"policy": "test", "seed": 3})
    kwargs.update(overrides)
    return LoggedFeedback(**kwargs)


def test_parquet_round_trip_keeps_every_column(tmp_path):
    log = make_log()
    back = LoggedFeedback.read_parquet(log.write_parquet(tmp_path / "log.parquet"))
    for name in ("customer_id", "episode", "week", "context", "actions", "propensity", "reward",
                 "action_dist", "action_mask"):
        np.testing.assert_array_equal(getattr(back, name), getattr(log, name), err_msg=name)
    assert back.feature_names == FEATURES and back.nvec == NVEC
    assert back.metadata == {"policy": "test", "seed": 3}
    table = pq.read_table(tmp_path / "log.parquet")
    assert {"customer_id", "week", "channel", "offer", "spend_level", "action", "propensity", "reward",
            *FEATURES} <= set(table.column_names)
    np.testing.assert_array_equal(table.column("action").to_numpy(), log.action)


def test_round_trip_without_optional_columns(tmp_path):
    log = make_log(with_dist=False, action_mask=None)
    back = LoggedFeedback.read_parquet(log.write_parquet(tmp_path / "plain.parquet"))
    assert back.action_dist is None and back.action_mask is None
    np.testing.assert_array_equal(back.actions, log.actions)


def test_select_and_concat():
    log = make_log()
    parts = [log.select(log.week == w) for w in range(3)]
    joined = LoggedFeedback.concat(parts)
    assert joined.n == log.n
    assert sorted(zip(joined.customer_id, joined.week, strict=True)) == sorted(zip(log.customer_id, log.week, strict=True))


def test_schema_check():
    log = make_log()
    good = DecisionSchema(FEATURES, NVEC, ("email", "sms"), ("none", "discount"), (0.0, 1.0))
    log.check_schema(good)
    other = DecisionSchema(("x", "y", "z"), NVEC, ("email", "sms"), ("none", "discount"), (0.0, 1.0))
    with pytest.raises(InvalidFeedbackError, match="log features differ"):
        log.check_schema(other)


def _bad_propensity(value):
    def edit(kw):
        kw["propensity"] = kw["propensity"].copy()
        kw["propensity"][4] = value
        kw["action_dist"] = None
    return edit


def _bad_action(dim, value):
    def edit(kw):
        kw["actions"] = kw["actions"].copy()
        kw["actions"][2, dim] = value
        kw["action_dist"] = None
    return edit


def _set(name, value):
    def edit(kw):
        kw[name] = value
    return edit


def _dist_off(kw):
    dist = kw["action_dist"].copy()
    dist[1] *= 1.1
    kw["action_dist"] = dist


def _dist_disagrees(kw):
    p = kw["propensity"].copy()
    p[1] = p[1] * 0.5
    kw["propensity"] = p


def _duplicate(kw):
    week = kw["week"].copy()
    week[1] = week[0]
    kw["week"] = week


INVALID = [
    ("propensity zero", _bad_propensity(0.0), r"propensity outside \(0, 1\]: 0.0 at row 4"),
    ("propensity above one", _bad_propensity(1.2), r"propensity outside \(0, 1\]: 1.2 at row 4"),
    ("propensity negative", _bad_propensity(-0.3), r"propensity outside \(0, 1\]"),
    ("propensity NaN", _bad_propensity(np.nan), r"column 'propensity' has a non-finite value"),
    ("channel out of range", _bad_action(0, 3), r"action outside the action set: channel=3 at row 2; valid channel values are 0..2"),
    ("offer negative", _bad_action(1, -1), r"action outside the action set: offer=-1 at row 2"),
    ("spend out of range", _bad_action(2, 7), r"spend_level=7 at row 2"),
    ("reward too short", _set("reward", np.zeros(11)), r"length mismatch: column 'reward' has shape \(11,\), expected \(12,\)"),
    ("week too long", _set("week", np.zeros(13, np.int64)), r"length mismatch: column 'week' has 13 rows, expected 12"),
    ("context wrong width", _set("context", np.zeros((12, 2), np.float32)), r"length mismatch: context has shape \(12, 2\)"),
    ("context NaN", _set("context", np.full((12, 3), np.nan, np.float32)), r"non-finite context value in column 'recency_weeks' at row 0"),
    ("actions wrong shape", _set("actions", np.zeros((12, 2), np.int64)), r"actions have shape \(12, 2\)"),
    ("float actions", _set("actions", np.full((12, 3), 0.5)), r"column 'channel' must hold integers"),
    ("empty", _set("customer_id", np.zeros(0, np.int64)), r"logged feedback is empty"),
    ("negative week", _set("week", -np.ones(12, np.int64)), r"column 'week' must be >= 0"),
    ("dist not summing to one", _dist_off, r"action_dist row 1 sums to"),
    ("dist disagrees with propensity", _dist_disagrees, r"action_dist disagrees with propensity at row 1"),
    ("duplicate decision", _duplicate, r"duplicate decision: \(customer_id, episode, week\)=\(0, 0, 0\)"),
    ("mask not bool", _set("action_mask", np.ones((12, 7), np.int64)), r"action_mask must be bool of shape \(12, 7\)"),
    ("nvec wrong", _set("nvec", (3, 2)), r"nvec must be 3 positive sizes"),
    ("reserved feature name", _set("feature_names", ("reward", "b", "c")), r"clash with reserved column names"),
]


@pytest.mark.parametrize("label,edit,match", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_logs_are_rejected_by_name(label, edit, match):
    good = make_log()
    kw = {name: getattr(good, name) for name in ("feature_names", "nvec", "customer_id", "week", "context", "actions",
                                                  "propensity", "reward", "action_dist", "action_mask")}
    edit(kw)
    with pytest.raises(InvalidFeedbackError, match=match):
        LoggedFeedback(**kw)


def test_invalid_files_are_rejected_by_name(tmp_path):
    table = make_log().to_arrow()
    with pytest.raises(InvalidFeedbackError, match=r"missing column\(s\) 'propensity', 'frequency'"):
        feedback_from_arrow(table.drop(["propensity", "frequency"]))
    no_meta = table.replace_schema_metadata({})
    with pytest.raises(InvalidFeedbackError, match="no feature_names metadata; pass feature_names"):
        feedback_from_arrow(no_meta)
    back = feedback_from_arrow(no_meta, feature_names=FEATURES, nvec=NVEC)
    assert back.n == 12
    with pytest.raises(InvalidFeedbackError, match="nvec given"):
        feedback_from_arrow(table, nvec=(4, 2, 2))
    bad_joint = table.set_column(table.column_names.index("action"), "action", pa.array(np.zeros(12, np.int64)))
    with pytest.raises(InvalidFeedbackError, match="column 'action' \\(joint index\\) disagrees"):
        feedback_from_arrow(bad_joint)
    path = tmp_path / "bad.parquet"
    bad_p = table.set_column(table.column_names.index("propensity"), "propensity", pa.array(np.full(12, 2.0)))
    pq.write_table(bad_p.drop(["action_dist"]), path)
    with pytest.raises(InvalidFeedbackError, match=r"propensity outside \(0, 1\]: 2.0 at row 0"):
        LoggedFeedback.read_parquet(path)
    with pytest.raises(FileNotFoundError, match="no logged-feedback file"):
        LoggedFeedback.read_parquet(tmp_path / "missing.parquet")
    assert METADATA_KEY in table.schema.metadata
