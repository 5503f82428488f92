"""The index agent's bulk path against the real Elasticsearch (strict template applied).

Predictions are real Avro records of the prediction contract; the agent's own functions
build the bulk body (orjson, ``create`` with deterministic ids) and read the filtered
responses. What a redelivery and a refused document do is checked on the index itself.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from precog.services.agents.index import BulkDoc, build_docs, bulk_until_acknowledged
from precog.services.runtime import Runtime, create_app

from precog.avro import Codec
from precog.scoring import EventContext, prediction_record
from precog.settings import Settings
from precog.spec import load_spec
from precog.traffic import ArmPlan

pytestmark = pytest.mark.integration

NAMES = ["amount", "count_1h"]


def _model(model_id: str, role: str) -> Any:
    return SimpleNamespace(
        model=SimpleNamespace(model_id=model_id, version=1, threshold=0.5,
                              artifact_sha256="ab" * 32),
        role=role,
    )


MODELS = SimpleNamespace(all=[_model("fraud-lgbm", "leader"), _model("fraud-logreg", "challenger")],
                         plan=ArmPlan.shadow())


def _events(ns: str, n: int) -> list[Any]:
    """``n`` prediction records as the index agent receives them (Faust-like events)."""
    codec = Codec.for_schema("prediction")
    events = []
    for i in range(n):
        record = prediction_record(
            spec_name="transactions", event_id=f"e{i}", entity_id=f"card-{i % 3}",
            event_time=1_700_000_000_000 + i, scored_time=1_700_000_000_100 + i,
            models=MODELS, scores=[(i % 10) / 10, ((i * 3) % 10) / 10], feature_names=NAMES,
            values=[10.0 + i, float(i % 4)], ages_ms=[0, 1000],
            origin=EventContext(f"{ns}.events.transactions", i % 4, i), namespace=ns,
            event_schema="precog.events.Transaction/v1", code_version="abc123", worker="host:1",
        )
        message = SimpleNamespace(value=codec.encode(record), key=b"k", topic=f"{ns}.predictions",
                                  partition=0, offset=i, timestamp=None)
        events.append(SimpleNamespace(message=message))
    return events


def _runtime(settings: Settings) -> Runtime:
    return Runtime(settings=settings, spec=load_spec(settings.spec), app=create_app(settings))


async def _index(rt: Runtime, docs: list[BulkDoc]) -> list[tuple[BulkDoc, str]]:
    try:
        return await bulk_until_acknowledged(rt, docs)
    finally:
        await rt.es.close()
        rt._es = None


def test_every_document_is_created_once_and_a_redelivery_keeps_what_the_join_added(
    settings: Settings, es_client: Any
) -> None:
    rt = _runtime(settings)
    index = settings.index("predictions")
    events = _events(settings.namespace, 25)
    docs, bad = build_docs(rt, events)
    assert bad == [] and len(docs) == 50
    assert asyncio.run(_index(rt, docs)) == []
    es_client.indices.refresh(index=index)
    assert es_client.count(index=index)["count"] == 50
    stored = es_client.get(index=index, id=docs[0].doc_id)["_source"]
    assert stored == orjson.loads(docs[0].source)

    # the join adds the outcome; then the whole batch is delivered again
    es_client.update(index=index, id=docs[0].doc_id, doc={"outcome_label": 1},
                     refresh=True)
    def existing() -> float | None:
        return rt.metrics.registry.get_sample_value("precog_documents_existing_total",
                                                    {"index": index})
    assert existing() is None
    again, _ = build_docs(rt, events)
    assert asyncio.run(_index(rt, again)) == []  # 409s are acknowledged
    assert existing() == 50  # and counted: the index holds 50, not 100
    es_client.indices.refresh(index=index)
    assert es_client.count(index=index)["count"] == 50
    assert es_client.get(index=index, id=docs[0].doc_id)["_source"]["outcome_label"] == 1


def test_a_document_the_strict_mapping_refuses_comes_back_with_its_reason(
    settings: Settings, es_client: Any
) -> None:
    rt = _runtime(settings)
    index = settings.index("predictions")
    docs, _ = build_docs(rt, _events(settings.namespace, 3))
    broken = orjson.loads(docs[1].source) | {"not_in_the_contract": 1}
    docs[1] = BulkDoc(docs[1].doc_id, docs[1].action, orjson.dumps(broken), "owner-1")
    rejected = asyncio.run(_index(rt, docs))
    assert [(d.doc_id, d.owner) for d, _ in rejected] == [(docs[1].doc_id, "owner-1")]
    assert "strict_dynamic_mapping_exception" in rejected[0][1]
    es_client.indices.refresh(index=index)
    assert es_client.count(index=index)["count"] == 5


def test_partial_updates_apply_missing_documents_come_back_and_give_up_at_the_limit(
    settings: Settings, es_client: Any
) -> None:
    from precog.services.agents.index import update_documents

    rt = _runtime(settings)
    index = settings.index("predictions")
    docs, _ = build_docs(rt, _events(settings.namespace, 2))
    there, missing, last_try = docs[0].doc_id, "no-such-prediction:m:1", "also-missing:m:1"

    async def run() -> tuple[Any, Any]:
        try:
            assert await bulk_until_acknowledged(rt, docs) == []
            first = await update_documents(rt, index, {
                there: ({"outcome_label": 1, "outcome_time": 5}, 0),
                missing: ({"outcome_label": 0}, 3),
                last_try: ({"outcome_label": 0}, 9),
            }, max_attempts=10, what="outcome update")
            unreachable = Runtime(settings=settings.model_copy(update={
                "elasticsearch": settings.elasticsearch.model_copy(
                    update={"url": "http://127.0.0.1:9"})}),
                spec=rt.spec, app=rt.app)
            try:
                kept = await update_documents(unreachable, index, {there: ({"outlier": True}, 2)},
                                              max_attempts=10, what="outlier update")
            finally:
                await unreachable.es.close()
            return first, kept
        finally:
            await rt.es.close()
            rt._es = None

    first, kept = asyncio.run(run())
    # the missing document comes back with one more attempt; at the limit it is dropped
    assert first == {missing: ({"outcome_label": 0}, 4)}
    stored = es_client.get(index=index, id=there)["_source"]
    assert (stored["outcome_label"], stored["outcome_time"]) == (1, 5)
    assert stored["score"] == orjson.loads(docs[0].source)["score"]  # the rest is untouched
    assert kept == {there: ({"outlier": True}, 2)}  # Elasticsearch unreachable: all kept
