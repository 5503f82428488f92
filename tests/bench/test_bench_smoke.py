"""Smoke run of the benchmarks: the report is produced and complete (speeds are never asserted)."""

from __future__ import annotations

import json
import math

import pytest

from precog.bench.report import BEGIN, END, PROFILE_BEGIN, PROFILE_END, REQUIRED, check_complete
from precog.bench.runner import BenchConfig, run_bench, run_core_profile

pytestmark = pytest.mark.bench

SECTIONS = ("throughput", "latency", "outcome", "core", "batch")


def test_quick_bench_writes_a_complete_report(stack, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nhand-written intro\n\n{BEGIN}\nold\n{END}\n\nnotes\n")
    config = BenchConfig.quick_config(sections=SECTIONS, events=1500, naive_events=300,
                                      naive_index_events=100, outcome_labels=1000,
                                      history_events=3000)
    report = run_bench(config, tmp_path / "out", doc, "./scripts/bench --quick", echo=print)

    assert report["errors"] == {}
    assert report["missing"] == [] and check_complete(report, SECTIONS) == []
    saved = json.loads((tmp_path / "out").glob("bench-*-quick.json").__next__().read_text())
    assert set(SECTIONS) <= set(saved) and saved["config"]["quick"] is True
    t = saved["throughput"]
    for kind in REQUIRED["throughput"][:-1]:
        assert t[kind]["median"] > 0 and math.isfinite(t[kind]["median"]), kind
    assert t["ratios"]["precog_vs_naive"]["median"] > 0
    # the same worker on events of a world of 100,000 entities: more of them in each batch
    assert t["entities"]["precog_many_world"] == 100_000
    assert t["entities"]["precog_many"] > max(t["entities"]["precog"], 0.9 * t["events"]["precog"])
    assert t["ratios"]["precog_many_vs_precog"]["median"] > 0
    # where the CPU went: the worker's own tree and the broker's, per run and per rate
    assert t["cpu"]["precog"]["worker"]["median"] > 0 and t["cpu"]["precog"]["kafka"]["median"] > 0
    # the latency probe's receiver runs in a process of its own: below the maximum every
    # event offered after the warm-up was received and timed
    for row in saved["latency"]["rates"]:
        assert row["cpu"]["worker"]["median"] > 0 and row["p50_ms"]["median"] > 0, row
        assert row["lost"] == 0 or row["fraction"] > 0.5, row
    # the no-work floor at the same rates, its hop a process of its own like the worker
    assert [row["fraction"] for row in saved["latency"]["floor"]] == [0.25, 0.5, 0.75]
    for row in saved["latency"]["floor"]:
        assert row["cpu"]["worker"]["median"] > 0 and row["p50_ms"]["median"] > 0, row
        assert row["lost"] == 0 or row["fraction"] > 0.5, row
    assert saved["outcome"]["labels_per_s"]["median"] > 0
    idle = saved["core"]["after_idle"]
    assert idle["busy_ms_per_batch"] > 0 and idle["after_idle_ms_per_batch"] > 0
    assert saved["outcome"]["join_state"]["json_bytes_per_entry"] > 0
    assert saved["batch"]["events_per_s"]["median"] > 0 and saved["batch"]["ratio"]["median"] > 0
    assert saved["batch"]["worker_from"] == "the throughput section's precog median"
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["services"]["redis"]
    names = {x["name"] for x in saved["targets"]}
    assert "precog / Faust passthrough" in names and "precog / naive" in names
    assert "precog / Quix Streams passthrough" in names
    # the generated block was replaced, the hand-written parts kept
    page = doc.read_text()
    assert page.startswith("# Benchmarks\n\nhand-written intro") and page.rstrip().endswith("notes")
    assert "old" not in page and "| **precog** worker" in page and "Outcome path" in page
    assert "| score-batch -> Parquet |" in page and "### Where the CPU went" in page
    assert "**After idle.**" in page
    assert "*Floor*: the same rates" in page and "(no-work floor " in page
    assert "| Quix Streams passthrough" in page and "| precog / Quix Streams naive |" in page
    assert "on events of 100,000 entities (" in page
    assert "| precog, many entities / precog |" in page


def test_core_profile_writes_profiles_and_its_own_block(stack, tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\n{BEGIN}\nrun\n{END}\n\n{PROFILE_BEGIN}\nold\n{PROFILE_END}\n")
    config = BenchConfig.quick_config(sections=("core",), events=1000, history_events=3000)
    report = run_core_profile(config, tmp_path / "out", doc, "precog bench --profile",
                              echo=print)

    result = report["core_profile"]
    for side in ("before", "after"):
        html = tmp_path / "out" / result["profiles"][side].rsplit("/", 1)[-1]
        assert html.exists() and html.with_suffix(".txt").read_text().strip()
        assert all(v > 0 for v in result["us_per_event"][side].values() if v is not None)
    page = doc.read_text()
    assert "\nrun\n" in page and "old" not in page  # only the profile block was replaced
    assert "| featurize |" in page and "columnar featurizer" in page
