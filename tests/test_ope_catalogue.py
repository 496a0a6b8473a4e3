"""Logged feedback with creatives: the catalogue survives Parquet (copied or by reference), ids
are checked against it, and logs without creatives are written and read exactly as before."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rapport.agents.ope import InvalidFeedbackError, LoggedFeedback
from rapport.agents.ope.catalogue import CATALOGUE_KEY, CreativeCatalogue, InvalidCatalogueError
from rapport.agents.ope.logged import METADATA_KEY
from tests.test_ope_logged import make_log

C = 50


def catalogue(seed: int = 0, with_embeddings: bool = True) -> CreativeCatalogue:
    rng = np.random.default_rng(seed)
    attrs = {"theme": rng.integers(0, 6, C), "tone": rng.integers(0, 3, C), "explicitness": rng.integers(0, 3, C)}
    emb = rng.normal(size=(C, 4)).astype(np.float32) if with_embeddings else None
    names = ("f0", "f1", "f2", "f3") if with_embeddings else ()
    return CreativeCatalogue(attrs, emb, names)


def creative_log(n: int = 12, cat: CreativeCatalogue | None = None, **kw) -> LoggedFeedback:
    cat = catalogue() if cat is None else cat
    ids = np.where(np.arange(n) % 4 == 0, -1, np.arange(n) * 3 % C)
    return make_log(n, creative=ids, catalogue=cat, **kw)


def test_round_trip_with_a_copied_catalogue(tmp_path):
    log = creative_log()
    back = LoggedFeedback.read_parquet(log.write_parquet(tmp_path / "log.parquet"))
    np.testing.assert_array_equal(back.creative, log.creative)
    assert back.creative.dtype == np.int64 and back.catalogue.same_as(log.catalogue)
    for name, lv in log.catalogue.attributes.items():
        np.testing.assert_array_equal(back.catalogue.attributes[name], lv)
    np.testing.assert_array_equal(back.catalogue.embeddings, log.catalogue.embeddings)
    assert back.catalogue.feature_names == ("f0", "f1", "f2", "f3")
    np.testing.assert_array_equal(back.action_dist, log.action_dist)
    # select and concat keep the creative and the catalogue
    part = back.select(np.arange(6))
    np.testing.assert_array_equal(part.creative, log.creative[:6])
    both = LoggedFeedback.concat([part, back.select(np.arange(6, 12))])
    np.testing.assert_array_equal(both.creative, log.creative)


def test_attributes_only_catalogue_round_trips(tmp_path):
    log = creative_log(cat=catalogue(with_embeddings=False))
    back = LoggedFeedback.read_parquet(log.write_parquet(tmp_path / "a.parquet"))
    assert back.catalogue.embeddings is None and back.catalogue.count == C
    assert set(back.catalogue.attributes) == {"theme", "tone", "explicitness"}


def test_catalogue_by_reference(tmp_path):
    log = creative_log()
    path = log.write_parquet(tmp_path / "ref.parquet", copy_catalogue=False)
    assert CATALOGUE_KEY not in pq.read_schema(path).metadata
    with pytest.raises(InvalidFeedbackError, match="no copy of its catalogue; pass catalogue="):
        LoggedFeedback.read_parquet(path)
    back = LoggedFeedback.read_parquet(path, catalogue=log.catalogue)
    np.testing.assert_array_equal(back.creative, log.creative)
    with pytest.raises(InvalidFeedbackError, match="catalogue given is not the catalogue the log was written with"):
        LoggedFeedback.read_parquet(path, catalogue=catalogue(seed=1))
    copied = log.write_parquet(tmp_path / "copy.parquet")
    with pytest.raises(InvalidFeedbackError, match="differs from the file's copy"):
        LoggedFeedback.read_parquet(copied, catalogue=catalogue(seed=1))
    with pytest.raises(InvalidFeedbackError, match="file has no 'creative' column"):
        LoggedFeedback.read_parquet(make_log().write_parquet(tmp_path / "plain.parquet"), catalogue=log.catalogue)


def test_logs_without_creatives_are_unchanged(tmp_path):
    """No creative column, no catalogue metadata: the Arrow table (hence the file) is what it was
    before creatives existed (sha256 recorded from the parent commit's to_arrow)."""
    table = make_log().to_arrow()
    assert "creative" not in table.column_names and set(table.schema.metadata) == {METADATA_KEY}
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    assert hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest() == \
        "adf4a8c03971f4c5385d285233d2516dcb0fd8b187417b3e1a31ec76a528275e"
    back = LoggedFeedback.read_parquet(make_log().write_parquet(tmp_path / "p.parquet"))
    assert back.creative is None and back.catalogue is None


@pytest.mark.parametrize("kw, match", [
    (dict(creative=np.full(12, C)), f"creative id {C} at row 0 is not in the catalogue; valid ids are 0..{C - 1}, or -1"),
    (dict(creative=np.full(12, -2)), "creative id -2 at row 0"),
    (dict(creative=np.zeros(11, np.int64)), r"column 'creative' has shape \(11,\), expected \(12,\)"),
    (dict(creative=np.full(12, 0.5)), "must hold integer ids"),
    (dict(catalogue=None), "column 'creative' needs the catalogue"),
    (dict(creative=None), "catalogue was given without the 'creative' column"),
])
def test_bad_creatives_are_rejected_by_name(kw, match):
    args = dict(creative=np.zeros(12, np.int64), catalogue=catalogue())
    args.update(kw)
    with pytest.raises(InvalidFeedbackError, match=match):
        make_log(12, **args)


@pytest.mark.parametrize("args, match", [
    (dict(attributes={"theme": np.zeros(5, np.int64), "tone": np.zeros(4, np.int64)}),
     r"attributes\['tone'\] has 4 creatives, the first attribute 5"),
    (dict(attributes={"theme": np.zeros(5, np.int64)}, embeddings=np.zeros((4, 2))), "embeddings have 4 rows but the attributes 5"),
    (dict(attributes={"theme": np.array([0, -1])}), "negative level at creative 1"),
    (dict(attributes={"theme": np.zeros(3)}), "must hold integer levels"),
    (dict(embeddings=np.zeros((3, 2)), feature_names=("a",)), "1 names for 2 embedding columns"),
    (dict(embeddings=np.full((3, 2), np.nan)), "non-finite value at creative 0"),
    (dict(), "needs attributes or embeddings"),
    (dict(attributes={"embedding": np.zeros(3, np.int64)}), "reserved"),
])
def test_bad_catalogues_are_rejected_by_name(args, match):
    with pytest.raises(InvalidCatalogueError, match=match):
        CreativeCatalogue(**args)


def test_concat_refuses_different_catalogues():
    a, b = creative_log(), creative_log(cat=catalogue(seed=2))
    with pytest.raises(InvalidFeedbackError, match="different creative catalogues"):
        LoggedFeedback.concat([a.select(np.arange(6)), b.select(np.arange(6, 12))])
