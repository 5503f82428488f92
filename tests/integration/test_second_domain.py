"""A second domain against the real stack, through the installed CLI, with no code change.

The meter-readings schema and spec of tests/unit/test_second_domain.py are written to a
directory outside the package; ``PRECOG_SPEC`` names the spec and ``PRECOG_SCHEMA_DIRS``
the schemas. ``precog setup`` creates the domain's topics, ``precog history write`` and
``check`` make its history, ``precog train`` registers and indexes its models and publishes
roles, and ``precog backfill`` folds the history into Redis.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from precog.io.kafka import admin
from precog.namespace import drop_namespace
from precog.settings import Settings
from tests.conftest import unique_namespace
from tests.unit.test_second_domain import SCHEMA, SPEC, _csv, _readings

pytestmark = pytest.mark.integration
PRECOG = [sys.executable, "-m", "precog"]


def _precog(args: list[str], env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run([*PRECOG, *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_setup_train_and_backfill_a_domain_from_outside_the_package(
        stack: list[Any], tmp_path: Path) -> None:
    (tmp_path / "avro").mkdir()
    (tmp_path / "avro" / "meter_reading.v1.avsc").write_text(json.dumps(SCHEMA))
    # the schemas through the setting this time, not the spec's schema_dirs
    (tmp_path / "meters.yaml").write_text(SPEC.replace("schema_dirs: [avro]\n", ""))
    events, outcomes = _readings(600, seed=3)
    ns = unique_namespace()
    env = {**os.environ, "PRECOG_NAMESPACE": ns, "PRECOG_SPEC": str(tmp_path / "meters.yaml"),
           "PRECOG_SCHEMA_DIRS": str(tmp_path / "avro"),
           "PRECOG_REGISTRY_DIR": str(tmp_path / "registry")}
    settings = Settings(namespace=ns)
    try:
        _precog(["setup"], env, tmp_path)
        topics = set(admin(settings).list_topics(timeout=10).topics)
        assert {f"{ns}.events.meters", f"{ns}.outcomes", f"{ns}.predictions"} <= topics

        _precog(["history", "write", "--from", str(_csv(tmp_path / "r.csv", events)),
                 "--outcomes", str(_csv(tmp_path / "o.csv", outcomes)),
                 "--out", str(tmp_path / "history")], env, tmp_path)
        out = _precog(["history", "check", str(tmp_path / "history")], env, tmp_path)
        assert out.startswith(f"{tmp_path / 'history'}: ok, 600 events, 600 outcomes")

        out = _precog(["train", "--history", str(tmp_path / "history")], env, tmp_path)
        assert "training meters" in out and "tamper-lgbm" in out and "tamper-logreg" in out
        assert (tmp_path / "registry" / "tamper-lgbm" / "1").is_dir()

        out = _precog(["backfill", "--history", str(tmp_path / "history")], env, tmp_path)
        assert "600 events folded into 12 entity states" in out, out
    finally:
        drop_namespace(settings)
