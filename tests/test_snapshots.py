"""Baselines survive a restart: snapshot/restore on Baselines, the store's snapshots table
(schema v5), and a Pipeline that saves at stop and restores at start on a reopened store."""
from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from otel_ai.baseline import Baselines
from otel_ai.config import load_settings
from otel_ai.pipeline import Pipeline
from otel_ai.snapshots import BASELINES, baselines_snapshot, decode, encode, restore_baselines
from otel_ai.store import IncidentStore
from otel_ai.subjects import SubjectTable
from otel_ai.testing.scenarios import deep_scenario
from otel_ai.histogram import BINS
from test_noise_model import bursty_errors


@pytest.fixture(scope="module")
def learnt() -> tuple[SubjectTable, Baselines]:
    """Two hours of a bursty route and a steady dependency (id 0 is the overflow subject)."""
    subjects = SubjectTable()
    subjects.route("stations", "GET", "/stations")
    subjects.dependency("orders-db")
    baselines = Baselines(10.0, ["errors"])
    rng = np.random.default_rng(1)
    hist = np.zeros((3, BINS))
    for bad in bursty_errors(rng, 720, 50):
        slot = {"requests": np.array([0.0, 50.0, 20.0]), "errors": np.array([0.0, bad, rng.binomial(20, 0.01)])}
        baselines.learn(slot, hist, np.zeros(3, dtype=bool))
    return subjects, baselines


def test_a_snapshot_restores_the_same_baselines_under_new_ids(learnt):
    subjects, baselines = learnt
    blob = encode(baselines_snapshot(subjects, baselines))
    fresh_subjects = SubjectTable()
    fresh_subjects.route("shop", "GET", "/other")  # ids differ in the new process
    fresh = Baselines(10.0, ["errors"])
    assert restore_baselines(decode(blob), fresh_subjects, fresh) == 2
    old = np.array([subjects.route("stations", "GET", "/stations"), subjects.dependency("orders-db")])
    new = np.array([fresh_subjects.route("stations", "GET", "/stations"), fresh_subjects.dependency("orders-db")])
    assert not np.array_equal(old, new)
    assert fresh.rate("errors", len(fresh_subjects))[new].tolist() == baselines.rate("errors", len(subjects))[old].tolist()
    for slots in (1, 6, 30):
        assert np.array_equal(np.stack(fresh.dispersion("errors", new, slots)), np.stack(baselines.dispersion("errors", old, slots)))
    assert fresh.rate("errors", len(fresh_subjects))[1] == baselines.rate("errors", 3)[0]  # /other: unlearnt
    print(f"baseline snapshot: {len(blob)} bytes for 2 subjects")


def test_the_snapshot_keeps_only_the_busiest_subjects(learnt):
    subjects, baselines = learnt
    arrays = baselines_snapshot(subjects, baselines, limit=1)
    assert arrays["subject.route"].tolist() == ["/stations"]  # busier than orders-db, the overflow never
    assert all(values.shape[0] == 1 for values in arrays.values())


def test_a_snapshot_from_another_layout_is_refused_whole(learnt):
    subjects, baselines = learnt
    arrays = baselines_snapshot(subjects, baselines)
    arrays["baseline.hist"] = arrays["baseline.hist"][:, :3]
    fresh = Baselines(10.0, ["errors"])
    with pytest.raises(ValueError, match="baseline.*hist"):
        restore_baselines(arrays, SubjectTable(), fresh)
    assert fresh.traffic(3).tolist() == [0.0, 0.0, 0.0]


def test_the_store_keeps_the_latest_snapshot_per_name(tmp_path):
    store = IncidentStore(tmp_path / "incidents.db")
    assert store.load_snapshot(BASELINES) is None
    store.save_snapshot(BASELINES, 1, b"old")
    store.save_snapshot(BASELINES, 2, b"new")
    store.save_snapshot("graph", 3, b"other")
    assert store.load_snapshot(BASELINES) == (2, b"new")
    store.close()
    with sqlite3.connect(tmp_path / "incidents.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM snapshots").fetchone() == (2,)


# --------------------------------------------------------------------------- through the pipeline

def test_a_pipeline_saves_at_stop_and_a_new_one_restores_at_start(tmp_path):
    settings = load_settings(env={})
    store = IncidentStore(tmp_path / "incidents.db")
    first = Pipeline(settings, store, use_wall_clock=False)
    first.snapshots.start()  # as start() does; the traffic is fed synchronously, without the worker
    for body in deep_scenario("deep_benign", seed=4, rate_scale=0.05, duration_s=1200).serialized_batches(1200, 10.0):
        first.feed(body)
    first.stop(5.0)
    saved = store.load_snapshot(BASELINES)
    assert saved is not None
    store.close()

    store = IncidentStore(tmp_path / "incidents.db")  # the restarted process
    second = Pipeline(settings, store, use_wall_clock=False)
    second.start()
    graph_components = len(first.graph.state())
    assert graph_components > 10
    assert second.baselines_origin.startswith(
        f"restored {len(first.subjects) - 1} routes and dependencies and {graph_components} graph components, saved 20")
    try:
        size = len(first.subjects)
        for subject in first.subjects.subjects[1:size]:
            old, new = first.subjects.lookup(subject), second.subjects.lookup(subject)
            assert new is not None, subject
            assert second.baselines.rate("errors", len(second.subjects))[new] == first.baselines.rate("errors", size)[old]
        assert second.baselines.warm(len(second.subjects)).sum() == first.baselines.warm(size).sum() > 10
        # The graph learnt the same per route and edge (ids differ, names do not).
        assert sorted(map(str, second.graph.state())) == sorted(map(str, first.graph.state()))
    finally:
        second.stop(5.0)
        store.close()
    print(f"pipeline snapshot: {len(saved[1])} bytes for {size - 1} subjects")


def test_a_damaged_snapshot_costs_the_learning_not_the_start(tmp_path):
    store = IncidentStore(tmp_path / "incidents.db")
    store.save_snapshot(BASELINES, 1, b"not an npz")
    pipeline = Pipeline(load_settings(env={}), store, use_wall_clock=False)
    pipeline.start()
    pipeline.stop(5.0)
    assert pipeline.baselines_origin.startswith("the saved ones are unusable (cannot read the saved baselines snapshot")
    assert len(pipeline.subjects) == 1  # only the overflow subject: nothing restored
    assert decode(store.load_snapshot(BASELINES)[1])["subject.route"].tolist() == []  # and a good one saved
    store.close()


def test_a_damaged_graph_snapshot_costs_the_graph_never_the_start(tmp_path, learnt):
    store = IncidentStore(tmp_path / "incidents.db")
    store.save_snapshot(BASELINES, 1, encode(baselines_snapshot(*learnt)))
    store.save_snapshot("graph", 2, b"not an npz")
    pipeline = Pipeline(load_settings(env={}), store, use_wall_clock=False)
    pipeline.start()
    try:
        assert "the saved service graph is unusable" in pipeline.baselines_origin
    finally:
        pipeline.stop(5.0)
        store.close()
