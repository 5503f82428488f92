"""Hot reload: follow ``{ns}.model-control`` and swap the worker's models between batches.

Every worker must see every role change, so this is not a consumer-group agent (a group
would give the single partition to one worker only): a background thread reads the
compacted topic from the beginning with a manually assigned partition and no commits.
Models are loaded (sha256 verified) in that thread; the new :class:`ModelSet` replaces the
old one in a single assignment on the event loop, so a batch is always scored by one set.
A leader that fails to load is refused and the current set stays in place; a challenger
that fails to load is left out.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from precog.services.runtime import Runtime, tune_gc

from precog.errors import PrecogError
from precog.features import Featurizer
from precog.io.kafka import CONTROL_TOPIC
from precog.registry import ModelRegistry
from precog.registry.model_set import model_set_from_roles
from precog.schema_registry import control_codec
from precog.scoring import ModelSet

log = logging.getLogger("precog.control")


class RoleWatcher:
    """Background thread that keeps ``rt.models`` in step with the model-control topic."""

    def __init__(self, rt: Runtime, loop: asyncio.AbstractEventLoop) -> None:
        self.rt = rt
        self.loop = loop
        self.registry = ModelRegistry(rt.settings.registry_dir)
        self.names = Featurizer(rt.spec).names
        self.codec = control_codec(rt.settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="precog-roles", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _consumer(self) -> Consumer:
        cfg = dict(self.rt.settings.kafka.confluent_config())
        cfg.update(
            {
                "group.id": f"{self.rt.settings.group('roles')}-{self.rt.worker_name}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        consumer = Consumer(cfg)
        topic = self.rt.settings.topic(CONTROL_TOPIC)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        return consumer

    def _run(self) -> None:
        consumer = self._consumer()
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.warning("model-control: %s", msg.error())
                    continue
                self._apply(msg.key(), msg.value())
        finally:
            consumer.close()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None or (key is not None and key.decode() != self.rt.spec.name):
            return
        try:
            record = self.codec.decode(value)
            current = self.rt.models
            if current is not None and record["revision"] <= current.revision:
                return
            models = model_set_from_roles(self.registry, record, self.names,
                                          salt=self.rt.spec.traffic.salt)
        except PrecogError as exc:
            log.error("model roles not applied, keeping the current models: %s", exc)
            return
        self.loop.call_soon_threadsafe(self._swap, models)

    def _swap(self, models: ModelSet) -> None:
        metrics = self.rt.metrics
        metrics.model_loaded.clear()
        for m in models.all:
            metrics.model_loaded.labels(
                m.model.model_id, str(m.model.version), m.role, m.model.artifact_sha256
            ).set(1)
        metrics.roles_revision.set(models.revision)
        self.rt.models = models
        tune_gc(self.rt.settings)  # the new models join the generation GC no longer walks
        log.info("scoring with %s", models.describe())


def register(rt: Runtime) -> None:
    """Start the role watcher when the app starts; stop it with the app."""
    @rt.app.task
    async def watch_roles() -> None:
        rt.role_watcher = RoleWatcher(rt, asyncio.get_running_loop())
        rt.role_watcher.start()

    async def stop() -> None:
        if rt.role_watcher is not None:
            rt.role_watcher.stop()

    rt.on_stop.append(stop)
