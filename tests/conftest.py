"""Shared test fixtures: the real local stack, one unique namespace per test, service clients.

Markers follow the folder (tests/unit -> ``unit``, tests/integration -> ``integration``,
tests/e2e -> ``e2e``) unless a test is marked already. The ``stack`` fixture never skips: when
Kafka, Elasticsearch or Redis cannot be brought up, every test that needs them fails with the
stack's one-line reason.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from precog.errors import PrecogError
from precog.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
# LightGBM scores with the Booster in the suite (and in the workers it starts): the compiled
# scorer is bit-for-bit the same (checked per model when it loads) but compiling each test's
# model costs seconds. tests/unit/test_tree_compiler.py turns it on; so can
# PRECOG_LIGHTGBM_COMPILED=true for a whole run.
os.environ.setdefault("PRECOG_LIGHTGBM_COMPILED", "false")
_LAYER_MARKERS = ("unit", "integration", "e2e", "bench")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by its folder unless it already carries a layer marker."""
    for item in items:
        try:
            parts = Path(str(item.path)).resolve().relative_to(ROOT / "tests").parts
        except ValueError:
            continue  # doctests in precog/, etc.
        if len(parts) < 2 or parts[0] not in ("unit", "integration", "e2e"):
            continue
        if not any(item.get_closest_marker(m) for m in _LAYER_MARKERS):
            item.add_marker(getattr(pytest.mark, parts[0]))


def unique_namespace() -> str:
    """A fresh namespace for one test: ``t`` + 10 hex digits."""
    return "t" + uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def stack() -> list[Any]:
    """Kafka, Elasticsearch and Redis up and healthy (already running ones are used as they are).

    Services given by ``PRECOG_KAFKA_BOOTSTRAP`` / ``PRECOG_REDIS_URL`` /
    ``PRECOG_ELASTICSEARCH_URL`` are only checked, never started.
    """
    from precog import stack as local_stack

    try:
        return local_stack.ensure(Settings(), echo=lambda msg: print(f"[stack] {msg}"))
    except PrecogError as exc:
        pytest.fail(f"local stack unavailable: {exc}", pytrace=False)


@pytest.fixture
def settings(stack: list[Any], tmp_path: Path) -> Iterator[Settings]:
    """Settings with a unique namespace whose topics and index templates exist.

    Everything named for the namespace (topics, consumer groups, indices, templates, Redis
    keys) is deleted after the test. The model registry lives in the test's tmp_path.
    """
    from precog.namespace import drop_namespace, setup_namespace
    from precog.spec import load_spec

    base = Settings()
    spec = base.spec if base.spec.is_absolute() else ROOT / base.spec
    s = Settings(namespace=unique_namespace(), spec=spec, registry_dir=tmp_path / "registry")
    setup_namespace(s, load_spec(spec))
    yield s
    try:
        drop_namespace(s)
    except Exception as exc:  # cleanup trouble must not hide the test's own outcome
        warnings.warn(f"cleanup of namespace {s.namespace} failed: {exc}", stacklevel=1)


@pytest.fixture
def kafka_admin(stack: list[Any]) -> Any:
    """A confluent-kafka AdminClient for the stack's Kafka."""
    from confluent_kafka.admin import AdminClient

    return AdminClient(Settings().kafka.confluent_config())


@pytest.fixture
def redis_client(stack: list[Any]) -> Iterator[Any]:
    """A redis-py client for the stack's Redis."""
    from precog.io.redis import redis_client as make_client

    client = make_client(Settings())
    yield client
    client.close()


@pytest.fixture
def es_client(stack: list[Any]) -> Iterator[Any]:
    """An Elasticsearch client for the stack's Elasticsearch."""
    from precog.io.elasticsearch import elasticsearch_client

    client = elasticsearch_client(Settings())
    yield client
    client.close()
