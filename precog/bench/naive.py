"""The naive baselines' work on one event, shared by the Faust and the Quix Streams apps.

A first implementation scores event by event: decode, validate, featurize from the
entity's state, a single-row ``predict_proba`` per model, build the prediction record,
encode it. :class:`NaiveJob` is that work without the I/O, so the Faust app
(``precog.bench.apps naive``) and the Quix Streams app (``precog.bench.quix_apps naive``)
differ only in their framework and their Redis client. Same featurizer, models and
records as precog's worker.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from precog.settings import Settings


class NaiveJob:
    """Per-event decode, check, featurize, predict and record of the namespace's models."""

    def __init__(self, settings: Settings, worker: str) -> None:
        from precog.avro import Codec, latest
        from precog.features import Featurizer
        from precog.registry import ModelRegistry, code_version
        from precog.scoring import make_model_set
        from precog.services.model_control import read_roles
        from precog.spec import load_spec

        self.settings = settings
        self.spec = spec = load_spec(settings.spec)
        self.featurizer = Featurizer(spec)
        roles = read_roles(settings, spec.name)
        if roles is None:
            raise SystemExit(f"no model roles in namespace {settings.namespace}")
        registry = ModelRegistry(settings.registry_dir)
        self.models = make_model_set(
            roles.revision,
            registry.load(roles.leader.model_id, roles.leader.version),
            [registry.load(c.model_id, c.version) for c in roles.challengers],
            self.featurizer.names,
        )
        self.codec = Codec.for_schema(spec.event.schema_name)
        self.out_codec = Codec.for_schema("prediction")
        self.schema_label = latest(spec.event.schema_name).label
        self.code_version = code_version(settings)
        self.worker = worker
        self.ttl = settings.redis.state_ttl_seconds

    def valid(self, record: dict[str, Any], now_ms: int) -> bool:
        """Whether the spec's checks pass (a failing event is skipped, as in the worker)."""
        from precog.validation import check_event

        return not check_event(self.spec, record, now_ms)

    def state_key(self, record: dict[str, Any]) -> str:
        """The Redis key of the event's entity state."""
        entity = str(record[self.spec.event.entity_field])
        return self.settings.redis_key("state", self.spec.name, entity)

    def score(self, record: dict[str, Any], raw_state: bytes | None, topic: str,
              partition: int, offset: int, now_ms: int) -> tuple[dict[str, Any], bytes]:
        """The prediction record of one event and the entity's new state (bytes)."""
        from precog.features import EntityState
        from precog.scoring import EventContext, prediction_record

        ev = self.spec.event
        state = EntityState.from_bytes(raw_state) if raw_state else None
        vector, new_state = self.featurizer.featurize(state, record)
        x = np.array([vector.values], dtype=np.float64)
        scores = [float(m.model.predict_proba(x[:, m.columns])[0]) for m in self.models.all]
        prediction = prediction_record(
            spec_name=self.spec.name, event_id=str(record[ev.id_field]),
            entity_id=str(record[ev.entity_field]), event_time=int(record[ev.time_field]),
            scored_time=now_ms, models=self.models, scores=scores,
            feature_names=self.featurizer.names, values=vector.values, ages_ms=vector.ages_ms,
            origin=EventContext(topic, partition, offset), namespace=self.settings.namespace,
            event_schema=self.schema_label, code_version=self.code_version, worker=self.worker,
        )
        new_state.applied[str(partition)] = offset
        return prediction, new_state.to_bytes()
