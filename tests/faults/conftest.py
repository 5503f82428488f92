"""Fault scenarios: a trained namespace and workers this test starts (and only those it kills)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from precog.pipelines.train import train

from precog.settings import Settings
from precog.simulate import write_history
from precog.spec import load_spec


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def trained(settings: Settings, tmp_path: Path) -> Any:
    """The namespace's spec after training and publishing roles on a small seeded history."""
    spec = load_spec(settings.spec)
    write_history(tmp_path / "history", 4_000, seed=11, progress=False,
                  spec=spec)
    train(settings, spec, tmp_path / "history")
    return spec
