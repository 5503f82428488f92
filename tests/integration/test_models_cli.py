"""`precog train` and `precog models` against the real Kafka and Elasticsearch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from precog.services.model_control import read_roles
from typer.testing import CliRunner

from precog import resources
from precog.cli import app
from precog.registry import ModelRegistry, models_document
from precog.roles import ModelRef
from precog.settings import Settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PRECOG = [sys.executable, "-c", "from precog.cli import main; main()"]
LGBM1, LGBM2 = ModelRef("fraud-lgbm", 1), ModelRef("fraud-lgbm", 2)
LOGREG1, LOGREG2 = ModelRef("fraud-logreg", 1), ModelRef("fraud-logreg", 2)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from precog.simulate import write_history

    out = tmp_path_factory.mktemp("history")
    write_history(out, 8000, seed=21, end_ms=1_760_000_000_000, progress=False)
    return out


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        "PRECOG_NAMESPACE": settings.namespace,
        "PRECOG_REGISTRY_DIR": str(settings.registry_dir),
        "PRECOG_SPEC": str(settings.spec),
        **extra,
    }


def _cli(settings: Settings, *args: str, **extra: str) -> str:
    result = CliRunner().invoke(app, list(args), env=_env(settings, **extra))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def _precog(settings: Settings, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """The installed entry point's behaviour (one-line errors, exit 2) in a subprocess."""
    env = {**os.environ, **_env(settings, **extra)}
    return subprocess.run([*PRECOG, *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_train_registers_indexes_and_publishes_roles(settings, history, es_client):
    out = _cli(settings, "train", "--history", str(history), "--seed", "3")
    assert "fraud-lgbm    1" in out and "fraud-logreg  1" in out
    assert f"registry: {settings.registry_dir.resolve()}" in out

    registry = ModelRegistry(settings.registry_dir)
    metas = registry.list()
    assert [(m.model_id, m.version) for m in metas] == [("fraud-lgbm", 1), ("fraud-logreg", 1)]

    template = json.loads((resources.template_dir() / "models.json").read_text())
    props = template["template"]["mappings"]["properties"]
    for meta in metas:
        doc_id, expected = models_document(settings.namespace, meta)
        got = es_client.get(index=settings.index("models"), id=doc_id)["_source"]
        assert got == expected
        assert set(got) == set(props) and set(got["holdout"]) == set(props["holdout"]["properties"])
        assert got["namespace"] == settings.namespace and got["version"] == 1
    mapping = es_client.indices.get_mapping(index=settings.index("models"))
    assert next(iter(mapping.values()))["mappings"]["dynamic"] == "strict"

    roles = read_roles(settings, "transactions")
    assert roles is not None
    assert (roles.revision, roles.leader, roles.challengers, roles.previous_leaders) == (
        1, LGBM1, (LOGREG1,), ()
    )

    # training again adds versions 2 and leaves existing roles alone
    _cli(settings, "train", "--history", str(history), "--seed", "3")
    assert registry.versions("fraud-lgbm") == [1, 2]
    assert registry.get("fraud-lgbm", 2).artifact_sha256 == metas[0].artifact_sha256
    assert read_roles(settings, "transactions").revision == 1

    # role changes through the CLI change what read_roles returns
    _cli(settings, "models", "set-leader", "fraud-lgbm", "2", "--reason", "retrained")
    roles = read_roles(settings, "transactions")
    assert (roles.revision, roles.leader, roles.previous_leaders, roles.reason) == (
        2, LGBM2, (LGBM1,), "retrained"
    )
    _cli(settings, "models", "add-challenger", "fraud-logreg", "2")
    _cli(settings, "models", "remove-challenger", "fraud-logreg", "1")
    roles = read_roles(settings, "transactions")
    assert (roles.revision, roles.challengers) == (4, (LOGREG2,))

    listing = _cli(settings, "models", "list")
    lines = {tuple(line.split()[:3]) for line in listing.splitlines()}
    assert {("fraud-lgbm", "2", "leader"), ("fraud-lgbm", "1", "previous-leader"),
            ("fraud-logreg", "2", "challenger"), ("fraud-logreg", "1", "-")} <= lines

    _cli(settings, "models", "rollback")
    roles = read_roles(settings, "transactions")
    assert (roles.revision, roles.leader, roles.challengers, roles.previous_leaders) == (
        5, LGBM1, (LOGREG2,), ()
    )

    shown = _cli(settings, "models", "show", "fraud-lgbm", "--version", "1")
    assert metas[0].artifact_sha256 in shown and "training window" in shown
    full = json.loads(_cli(settings, "models", "show", "fraud-logreg", "--json"))
    assert full["version"] == 2 and full["reference"]["score"]["shares"]


def test_bad_versions_and_tampered_artifacts_are_one_line_errors(settings, history):
    _cli(settings, "train", "--history", str(history), "--no-index")
    before = read_roles(settings, "transactions")

    bad = _precog(settings, "models", "set-leader", "fraud-lgbm", "99")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "precog: error: fraud-lgbm has no version 99 (versions: 1)"
    ]
    unknown = _precog(settings, "models", "add-challenger", "nope", "1")
    assert unknown.returncode == 2 and "no model 'nope'" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1

    registry = ModelRegistry(settings.registry_dir)
    path = registry.artifact_file(registry.get("fraud-logreg", 1))
    data = bytearray(path.read_bytes())
    data[100] ^= 0x01
    path.write_bytes(bytes(data))
    tampered = _precog(settings, "models", "set-leader", "fraud-logreg", "1")
    assert tampered.returncode == 2
    assert tampered.stderr.startswith("precog: error: sha256 mismatch for fraud-logreg v1")

    nothing_to_undo = _precog(settings, "models", "rollback")
    assert nothing_to_undo.returncode == 2
    assert "has no previous leader" in nothing_to_undo.stderr
    assert read_roles(settings, "transactions") == before


def test_unreachable_elasticsearch_fails_before_registering(settings, history):
    res = _precog(settings, "train", "--history", str(history),
                  PRECOG_ELASTICSEARCH_URL="http://127.0.0.1:1")
    assert res.returncode == 2
    assert res.stderr.startswith("precog: error: elasticsearch is not reachable at"
                                 " http://127.0.0.1:1")
    assert ModelRegistry(settings.registry_dir).list() == []
    assert read_roles(settings, "transactions") is None
