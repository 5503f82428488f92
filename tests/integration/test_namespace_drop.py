"""`precog namespace drop` / `list` and `precog setup`'s indices on the real stack.

Three namespaces of this test only: ``t…`` (dropped), ``t…0`` (a name the dropped one is a
prefix of) and ``t…-x`` (a namespace with a dash, whose groups read ``precog-t…-x-score``),
each with data in every store: topics with records, indices with documents, Redis keys,
committed consumer groups (Faust's ``worker``, the batch ``score`` and ``index`` groups) and
a registered model (its ``{ns}-models`` document and roles on ``{ns}.model-control``). The
stack is shared: only namespaces created here are ever dropped, and everything is counted
before and after.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pytest
from confluent_kafka import TopicPartition
from precog.services.model_control import publish_roles, read_roles
from typer.testing import CliRunner

from precog.cli import app
from precog.io import kafka
from precog.io.elasticsearch import elasticsearch_client
from precog.io.redis import redis_client
from precog.models import dump_lightgbm
from precog.namespace import index_stems, setup_namespace, topics_for
from precog.registry import HoldoutMetrics, ModelRegistry, index_metadata
from precog.roles import ModelRef, Roles
from precog.schema_registry import client, register_schemas, topic_schemas
from precog.settings import Settings
from precog.spec import load_spec
from precog.teardown import Resources, drop, find

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SPEC = load_spec(ROOT / "pipelines" / "specs" / "transactions.yaml")
GROUPS = ("worker", "score", "index")
RECORDS = 7
KEYS = 5


def _register(registry_dir: Path) -> Any:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 2))
    y = (x[:, 0] > 0).astype(np.int64)
    booster = lgb.train({"objective": "binary", "num_leaves": 3, "verbose": -1, "seed": 1,
                         "deterministic": True, "num_threads": 1},
                        lgb.Dataset(x, y, feature_name=["a", "b"]), num_boost_round=3)
    return ModelRegistry(registry_dir).register(
        "teardown-lgbm", "lightgbm", dump_lightgbm(booster), spec=SPEC.name,
        features=["a", "b"], threshold=0.5, training_window_start=0, training_window_end=1,
        training_rows=200, training_data_sha256="d" * 64, holdout_start=1, holdout_end=2,
        holdout_rows=20, holdout=HoldoutMetrics(precision=0.5, recall=0.5, f1=0.5,
                                                roc_auc=0.5, log_loss=0.7,
                                                positive_rate=0.5, label_rate=1.0),
        code_version="test", created_time=1)


def _fill(s: Settings, meta: Any) -> None:
    """Records on two topics, a model document, roles, Redis keys, committed groups."""
    p = kafka.producer(s)
    for topic in (s.topic(SPEC.event.topic), s.topic("predictions")):
        for i in range(RECORDS):
            p.produce(topic, key=f"k{i}".encode(), value=b"x")
    assert p.flush(30) == 0
    with elasticsearch_client(s) as es:
        index_metadata(es, s, meta)
    publish_roles(s, Roles(SPEC.name, 1, ModelRef(meta.model_id, meta.version)))
    r = redis_client(s, 5.0)
    try:
        for i in range(KEYS):
            r.set(s.redis_key("state", SPEC.name, f"e{i}"), b"1")
    finally:
        r.close()
    topic = s.topic("predictions")
    for g in GROUPS:
        c = kafka.consumer(s, s.group(g), **{"enable.auto.commit": False})
        try:
            c.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
        finally:
            c.close()


@pytest.fixture
def namespaces(stack: list[Any], tmp_path: Path) -> Iterator[list[Settings]]:
    base = "t" + uuid.uuid4().hex[:10]
    made = [Settings(namespace=ns, registry_dir=tmp_path / "registry")
            for ns in (base, f"{base}0", f"{base}-x")]
    meta = _register(tmp_path / "registry")
    for s in made:
        setup_namespace(s, SPEC)
        _fill(s, meta)
        register_schemas(s, SPEC)  # what setup does for a Confluent-format namespace
    yield made
    for s in made:  # whatever the test left
        drop(s, s.namespace)


def _cli(*args: str, input: str | None = None) -> Any:
    return CliRunner().invoke(app, list(args), input=input)


def _snapshot(names: list[str]) -> dict[str, Resources]:
    found = find(Settings())
    return {ns: found.get(ns, Resources(ns)) for ns in names}


def test_setup_creates_every_index_with_its_mapping(settings: Settings) -> None:
    s = settings  # conftest: a fresh namespace after `setup_namespace`
    with elasticsearch_client(s) as es:
        mappings = es.indices.get_mapping(index=",".join(s.index(i) for i in index_stems()))
    assert sorted(mappings) == sorted(s.index(i) for i in index_stems())
    # the fields exist before any document: what Kibana's data views read
    alerts = mappings[s.index("alerts")]["mappings"]["properties"]
    assert {"namespace", "event_time", "kind", "model_id", "statistic"} <= set(alerts)
    assert mappings[s.index("pipeline-health")]["mappings"]["properties"]["ratio"] == {
        "type": "double"}
    res = _cli("setup", "--namespace", s.namespace)  # again: nothing recreated or lost
    assert res.exit_code == 0, res.output
    assert f"index {s.index('models')}: already there" in res.output
    with elasticsearch_client(s) as es:
        assert sorted(es.indices.get(index=f"{s.namespace}-*")) == sorted(
            s.index(i) for i in index_stems())


def test_drop_removes_exactly_one_namespace(namespaces: list[Settings]) -> None:
    names = [s.namespace for s in namespaces]
    target, *others = namespaces
    before = _snapshot(names)
    for ns in names:  # every store has data of every namespace
        r = before[ns]
        assert sorted(r.topics) == sorted(t.name for t in topics_for(
            Settings(namespace=ns), SPEC).values()), r
        assert r.topics[f"{ns}.predictions"] == RECORDS, r
        assert sorted(r.indices) == sorted(f"{ns}-{i}" for i in index_stems())
        assert r.indices[f"{ns}-models"] == 1
        assert sorted(r.templates) == sorted(f"{ns}-{i}" for i in index_stems())
        assert r.groups == sorted(f"precog-{ns}-{g}" for g in GROUPS), r
        assert r.redis_keys == KEYS
    listed = _cli("namespace", "list")
    assert listed.exit_code == 0, listed.output
    rows = {line.split()[0]: line.split()[1:] for line in listed.output.splitlines()}
    assert rows[target.namespace] == [str(len(before[target.namespace].topics)),
                                      str(sum(before[target.namespace].topics.values())),
                                      str(len(index_stems())), "1", str(len(index_stems())),
                                      "3", str(KEYS)]

    res = _cli("namespace", "drop", target.namespace, "--yes")
    assert res.exit_code == 0, res.output
    gone = before[target.namespace]
    assert f"  topics: {len(gone.topics)} ({2 * RECORDS + 1} records)" in res.output
    assert f"  indices: {len(index_stems())} (1 documents)" in res.output
    assert "  consumer groups: 3" in res.output
    assert f"  Redis keys: {KEYS}" in res.output
    subjects = [n for n in client(Settings()).get_subjects()
                if n.split(".", 1)[0] in {s.namespace for s in namespaces}]
    assert not [n for n in subjects if n.startswith(f"{target.namespace}.")]
    assert {n.split(".", 1)[0] for n in subjects} == {s.namespace for s in others}
    assert f"  schema registry subjects: {len(topic_schemas(target, SPEC))}" in res.output

    after = _snapshot(names)
    assert after[target.namespace] == Resources(target.namespace)  # nothing of it is left
    for s in others:
        assert after[s.namespace] == before[s.namespace]  # nothing of the others touched
        assert read_roles(s, SPEC.name) is not None
    with elasticsearch_client(target) as es:
        assert not es.indices.exists(index=target.index("models"))
    # the model artifacts are shared: the other namespaces' registered model still loads
    assert ModelRegistry(target.registry_dir).load("teardown-lgbm", 1) is not None


def test_prod_is_refused_without_force(stack: list[Any]) -> None:
    before = find(Settings(), only="prod").get("prod", Resources("prod"))
    res = _cli("namespace", "drop", "prod", "--yes")
    assert res.exit_code != 0
    assert "refusing to drop namespace 'prod' without --force" in str(res.exception)
    assert find(Settings(), only="prod").get("prod", Resources("prod")) == before


def test_no_confirmation_removes_nothing(namespaces: list[Settings]) -> None:
    names = [s.namespace for s in namespaces]
    before = _snapshot(names)
    res = _cli("namespace", "drop", names[0], input="n\n")
    assert res.exit_code == 1
    assert res.output.splitlines()[-1] == "nothing removed"
    assert f"will remove {before[names[0]].summary()}" in res.output
    assert _snapshot(names) == before
