"""The worker's Kafka consumer fetches with ``WorkerSettings.fetch_max_wait_ms``, not Faust's 1.5 s.

The fetch wait is set on aiokafka's consumer before it starts; this starts one against the
stack's Kafka and reads the wait back from the fetcher aiokafka built, so an aiokafka or
Faust upgrade that drops the setting fails here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from precog.services import transport
from precog.services.runtime import create_app

from precog.settings import Settings


async def _started_fetch_wait(settings: Settings) -> tuple[Any, int]:
    app = create_app(settings)
    aio = app.consumer._new_consumer_thread()._create_worker_consumer(app.transport)
    await aio.start()
    try:
        return app.transport, aio._fetcher._fetch_max_wait_ms
    finally:
        await aio.stop()


def test_worker_consumer_uses_the_configured_fetch_wait(settings: Settings) -> None:
    s = settings.model_copy(update={"worker": settings.worker.model_copy(
        update={"fetch_max_wait_ms": 37, "data_dir": settings.registry_dir.parent / "worker"})})
    used_transport, wait = asyncio.run(_started_fetch_wait(s))
    assert isinstance(used_transport, transport.Transport)
    assert wait == 37


def test_default_fetch_wait_is_short() -> None:
    # the default keeps a drained topic from holding back the others for long
    assert Settings().worker.fetch_max_wait_ms == 200
