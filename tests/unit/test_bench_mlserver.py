"""The MLServer section's pieces that need no server: its model repository and its page part."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from precog.bench.mlserver import MODEL_NAME, combine_rounds, markdown, model_repository
from precog.bench.report import check_complete, targets

pytestmark = pytest.mark.unit


def _side(p50: float, p99: float) -> dict:
    return {"rates": [{"rate": 20.0, "p50_ms": p50, "p99_ms": p99, "requests": 60,
                       "requests_per_s": 20.0}],
            "saturation": {"requests_per_s": 100.0, "p50_ms": p50, "p99_ms": p99}}


def test_the_model_repository_serves_the_booster_file_on_127_0_0_1(tmp_path: Path) -> None:
    booster = tmp_path / "model.txt"
    booster.write_text("tree\nversion=v4\n")
    root = model_repository(tmp_path / "repo", booster, 18080)
    settings = json.loads((root / "settings.json").read_text())
    assert (settings["host"], settings["http_port"], settings["parallel_workers"]) == (
        "127.0.0.1", 18080, 0)
    model = json.loads((root / MODEL_NAME / "model-settings.json").read_text())
    assert model["implementation"] == "mlserver_lightgbm.LightGBMModel"
    assert (root / MODEL_NAME / model["parameters"]["uri"]).read_text() == booster.read_text()


def test_the_section_renders_and_its_target_is_the_p99_ratio() -> None:
    ml = {"precog": _side(10.0, 30.0), "mlserver": _side(5.0, 15.0),
          "p99_ratio": {"20.0": 2.0}, "saturation_ratio": 1.0, "rates_per_s": [20.0],
          "seconds_per_rate": 3.0, "saturation_clients": 8, "packages": ["mlserver==1.7.1"]}
    assert check_complete({"machine": {}, "command": "", "config": {}, "mlserver": ml},
                          ["mlserver"]) == []
    row = next(t for t in targets({"mlserver": ml}) if "MLServer" in t["name"])
    assert (row["value"], row["met"]) == (2.0, False)
    lines = markdown(ml)
    assert "| 20 | 10.0 ms | 30.0 ms | 5.0 ms | 15.0 ms | 2.00x |" in lines
    assert markdown(None) == []


def test_rounds_combine_into_medians_and_the_median_of_the_rounds_ratios() -> None:
    precog = [_side(4.0, 8.0), _side(5.0, 30.0), _side(3.0, 6.0)]
    mlserver = [_side(2.0, 4.0), _side(2.0, 5.0), _side(2.0, 6.0)]
    out = combine_rounds({"precog": precog, "mlserver": mlserver})
    row = out["precog"]["rates"][0]
    assert (row["p50_ms"], row["p99_ms"], row["p99_runs"]) == (4.0, 8.0, [8.0, 30.0, 6.0])
    # per round 2.0, 6.0 and 1.0: the median ratio is 2.0, not 8.0 / 5.0
    assert out["p99_ratio"] == {"20.0": 2.0}
    assert out["mlserver"]["rates"][0]["p99_ms"] == 5.0
    assert out["saturation_ratio"] == 1.0
    lines = markdown({**out, "rates_per_s": [20.0], "seconds_per_rate": 3.0, "rounds": 3,
                      "saturation_clients": 8, "packages": ["mlserver==1.7.1"]})
    assert "| 20 | 4.0 ms (3.0-5.0) | 8.0 ms (6.0-30.0) | 2.0 ms (2.0-2.0) |" \
        " 5.0 ms (4.0-6.0) | 2.00x |" in lines
