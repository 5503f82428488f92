"""Adapters: every client of Kafka, Redis and Elasticsearch is built and checked here.

The layer between the pure core and the agents, jobs and CLI (docs/layout.md):

* :mod:`precog.io.kafka` — confluent-kafka producer, consumer and admin client from
  ``settings.kafka``; reading partitions to their end; the model-control topic's name;
* :mod:`precog.io.elasticsearch` — sync and async clients from ``settings.elasticsearch``;
* :mod:`precog.io.redis` — sync and async clients from ``settings.redis``;
* :mod:`precog.io.health` — the health checks of the worker's preflight and of the stack.

Addresses in errors are redacted by :func:`precog.errors.redacted`.
"""
