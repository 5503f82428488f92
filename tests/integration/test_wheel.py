"""The wheel works on its own: ``pip install .`` (not editable) into a fresh venv, used from
outside the checkout: ``precog --help``, an event decoded with a packaged schema, ``precog
setup`` against the local stack, and ``precog`` as the wheel's only top-level package.

To stay fast the fresh venv gets the dependencies of the test's own environment through a
``.pth`` line (the effect of ``--system-site-packages`` for a virtual environment) and the
wheel with ``--no-deps``; the wheel itself is built by pip in an isolated build environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest

from precog.avro import Codec
from precog.settings import Settings
from precog.simulate import SimConfig, simulator_for
from tests.conftest import ROOT, unique_namespace

#: what the Dockerfile copies too: the project files a wheel is built from
SOURCES = ("pyproject.toml", "README.md", "precog", "services", "pipelines", "schemas", "kibana")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A fresh venv outside the checkout with the wheel of this working tree installed."""
    base = tmp_path_factory.mktemp("wheel")
    assert ROOT not in base.parents, "the venv must live outside the checkout"
    src = base / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=_IGNORE)
        else:
            shutil.copy2(path, src / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
         base, env)
    (wheel,) = dist.glob("precog-*.whl")
    venv = base / "venv"
    _run([sys._base_executable, "-m", "venv", str(venv)], base, env)  # type: ignore[attr-defined]
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     base, env).strip())
    (site / "_precog_test_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], base, env)
    cwd = base / "elsewhere"
    cwd.mkdir()
    return {"wheel": wheel, "venv": venv, "python": python, "site": site, "cwd": cwd, "env": env}


def test_the_wheel_holds_only_the_precog_package(installed):
    with zipfile.ZipFile(installed["wheel"]) as zf:
        names = zf.namelist()
    tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert tops == {"precog"}
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")] or [None]
    if top_level is not None:
        with zipfile.ZipFile(installed["wheel"]) as zf:
            assert zf.read(top_level).decode().split() == ["precog"]
    for data in ("precog/schemas/prediction.v1.avsc", "precog/kibana/saved_objects.ndjson",
                 "precog/kibana/templates/predictions.json",
                 "precog/pipelines/specs/transactions.yaml"):
        assert data in names
    assert not any(n.startswith(("scripts/", "tests/", "precog/scripts/")) for n in names)
    (record,) = installed["site"].glob("precog-*.dist-info/RECORD")
    installed_tops = {line.split(",")[0].split("/")[0] for line in record.read_text().splitlines()}
    assert {t for t in installed_tops if not t.endswith(".dist-info") and t != ".."} == {"precog"}


def test_precog_help_runs_from_outside_the_checkout(installed):
    out = _run([str(installed["venv"] / "bin" / "precog"), "--help"], installed["cwd"],
               installed["env"])
    assert "setup" in out and "worker" in out
    where = _run([str(installed["python"]), "-c", "import precog; print(precog.__file__)"],
                 installed["cwd"], installed["env"]).strip()
    assert Path(where).is_relative_to(installed["site"])


def test_an_event_decodes_with_the_packaged_schema(installed):
    event = next(iter(simulator_for(SimConfig(seed=3)).events(1))).record
    data = Codec.for_schema("transaction").encode(event)
    script = ("import json, sys; from precog.avro import Codec;"
              " c = Codec.for_schema('transaction'); print(json.dumps({'path': str(c.writer.path),"
              " 'record': c.decode(bytes.fromhex(sys.argv[1]))}))")
    out = json.loads(_run([str(installed["python"]), "-c", script, data.hex()], installed["cwd"],
                          installed["env"]))
    assert out["record"] == event
    assert Path(out["path"]) == installed["site"] / "precog" / "schemas" / "transaction.v1.avsc"


def test_precog_setup_against_the_stack(installed, stack):
    from precog.namespace import drop_namespace

    ns = unique_namespace()
    env = {**installed["env"], "PRECOG_NAMESPACE": ns,
           "PRECOG_REGISTRY_DIR": str(installed["cwd"] / "registry")}
    try:
        out = _run([str(installed["venv"] / "bin" / "precog"), "setup"], installed["cwd"], env)
        assert ns in out
    finally:
        drop_namespace(Settings(namespace=ns))
