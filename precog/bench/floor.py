"""The latency floor: a Kafka hop that does no work, timed by the same probe as the worker.

``python -m precog.bench.floor`` consumes the events topic and produces every record
unchanged (key, value) to ``{ns}.predictions``: a confluent-kafka consumer and producer,
nothing else. Its client settings are the worker's where they bear on latency, and the
lowest wait otherwise:

- the producer: idempotent, ``acks=all``, the worker's ``linger.ms``
  (:data:`precog.services.batch_producer.LINGER_MS`);
- the consumer: ``fetch.wait.max.ms`` = ``PRECOG_WORKER_BATCH_FETCH_MAX_WAIT_MS``,
  ``fetch.min.bytes`` 1 (a fetch returns as soon as one record is there; the worker waits for
  ``PRECOG_WORKER_BATCH_FETCH_MIN_BYTES``), and a ``poll`` that returns with the first record.

What the latency probe measures through it is what this machine, this broker and the probe
itself cost an event before any work is done: the part of a p99 that no worker can remove
(docs/benchmarks.md "Method"). ``GET /health`` on ``PRECOG_WORKER_WEB_PORT`` answers 200
once the consumer has its partitions, so the probe starts only then; SIGTERM or SIGINT stop
it after a flush.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from precog.io import kafka
from precog.settings import Settings


def _health_server(settings: Settings, assigned: threading.Event) -> ThreadingHTTPServer:
    """``GET /health``: 200 once ``assigned`` is set, 503 before."""

    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            ready = assigned.is_set()
            body = json.dumps({"status": "ok" if ready else "starting"}).encode()
            self.send_response(200 if ready else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer((settings.worker.web_host, settings.worker.web_port), Health)
    threading.Thread(target=server.serve_forever, name="floor-health", daemon=True).start()
    return server


def forward(settings: Settings, stop: threading.Event) -> int:
    """Forward the events topic to the predictions topic until ``stop``; records forwarded."""
    from precog.bench.io import forward_record
    from precog.services.batch_producer import LINGER_MS
    from precog.spec import load_spec

    source = settings.topic(load_spec(settings.spec).event.topic)
    sink = settings.topic("predictions")
    assigned = threading.Event()
    server = _health_server(settings, assigned)
    consumer = kafka.consumer(settings, settings.group("bench-floor"), **{
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": settings.worker.batch_fetch_max_wait_ms, "fetch.min.bytes": 1})
    producer = kafka.producer(settings, **{"enable.idempotence": True, "acks": "all",
                                           "linger.ms": LINGER_MS})
    consumer.subscribe([source], on_assign=lambda _c, parts: assigned.set() if parts else None)
    forwarded = 0
    try:
        while not stop.is_set():
            # poll returns with the first record; consume(n, timeout) would wait for n of them
            first = consumer.poll(0.05)
            if first is not None:
                for msg in (first, *consumer.consume(1000, 0)):
                    if msg.error() is None:
                        forward_record(producer, sink, msg)
                        forwarded += 1
            producer.poll(0)
        producer.flush(10)
    finally:
        consumer.close()
        server.shutdown()
    return forwarded


def main() -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    forwarded = forward(Settings(), stop)
    print(f"floor: forwarded {forwarded} records", file=sys.stderr)


if __name__ == "__main__":
    main()
