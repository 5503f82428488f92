"""Replay into a production-parallel namespace, and compare two namespaces.

The modules below are the pure core and touch no Kafka, Redis or Elasticsearch;
:mod:`precog.replay.runner` (a package) is the I/O edge that drives them.

* :mod:`precog.replay.request` — one replay's request (checked before anything connects) and
  its summary;
* :mod:`precog.replay.plan` — what to replay: time/offset arguments, per-partition ranges, pace;
* :mod:`precog.replay.pacing` — when to send each record (by record timestamp) and the ETA;
* :mod:`precog.replay.merge` — events and outcomes merged by time, per-partition order kept;
* :mod:`precog.replay.checkpoint` — delivery acknowledgements and the resume checkpoint;
* :mod:`precog.replay.warmup` — entity feature state rebuilt from a warm-up range;
* :mod:`precog.replay.compare` — two namespaces' predictions joined by event id.
"""
