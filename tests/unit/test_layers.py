"""The layer contract holds: core (no I/O) <- adapters <- agents and jobs <- CLI.

The contract is ``[tool.importlinter]`` in pyproject.toml (docs/layout.md, "Layers").
import-linter reads a package from its folder and cannot follow setuptools' package-dir, so
the test lays precog out as the wheel does (``services/`` as ``precog/services`` and so on)
in a temporary folder and runs ``lint-imports`` on that copy.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
TOOLS = tomllib.loads(PYPROJECT.read_text())["tool"]
PACKAGES = TOOLS["setuptools"]["packages"]
CONTRACTS = TOOLS["importlinter"]["contracts"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def wheel_tree(dest: Path) -> Path:
    """The Python modules of every package pyproject installs, where the wheel puts them."""
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.submodule_search_locations, package
        target = dest.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        for module in Path(spec.submodule_search_locations[0]).glob("*.py"):
            shutil.copy2(module, target / module.name)
    return dest


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}  # before the editable finder (appended)
    return subprocess.run([str(LINT_IMPORTS), "--config", str(PYPROJECT), "--no-cache"],
                          cwd=tree, env=env, capture_output=True, text=True, timeout=120)


def test_every_layer_contract_is_kept(tmp_path: Path) -> None:
    res = lint_imports(wheel_tree(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken." in res.stdout, res.stdout


def test_every_module_has_a_layer(tmp_path: Path) -> None:
    """A new module is placed in a layer (a package's ``__init__`` counts as a container)."""
    layers = next(c["layers"] for c in CONTRACTS if c["type"] == "layers")
    named = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    tree = wheel_tree(tmp_path)
    unplaced = []
    for path in sorted((tree / "precog").rglob("*.py")):
        parts = path.relative_to(tree).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
            if ".".join(parts) not in named:
                continue
        if not any(".".join(parts[:i]) in named for i in range(2, len(parts) + 1)):
            unplaced.append(".".join(parts))
    assert unplaced == []


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    tree = wheel_tree(tmp_path)
    scoring = tree / "precog" / "scoring.py"
    scoring.write_text(scoring.read_text() + "\nfrom precog.io import kafka  # noqa\n")
    res = lint_imports(tree)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "precog.scoring -> precog.io.kafka" in res.stdout, res.stdout
