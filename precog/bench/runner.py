"""Benchmarks of precog on the local stack: throughput, baselines, latency, memory, scaling.

``./scripts/bench`` (= ``precog bench``) trains models once, then runs every measurement
in its own fresh namespace (topics, Redis keys, indices; dropped afterwards) with the
same pre-generated events, and writes ``bench-results/bench-<time>.json`` and the table
in ``docs/benchmarks.md`` (between the ``bench:begin`` / ``bench:end`` markers; the rest
of that page is written by hand). Every number is the median of ``--reps`` runs with its
spread; ratios are computed within each round (same data, same minutes), then the median.
Only 127.0.0.1 is contacted; every run is bounded in count and time.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

from precog.bench.lab import REPO, SECTIONS, BenchConfig, Lab, generate_events, wait_indexed
from precog.bench.report import (
    PROFILE_BEGIN,
    PROFILE_END,
    check_complete,
    render_core_profile,
    render_markdown,
    targets,
    update_doc,
)
from precog.bench.sections import (
    bench_latency,
    bench_memory,
    bench_outcome,
    bench_profile,
    bench_scaling,
    bench_throughput,
)
from precog.settings import Settings

__all__ = ["REPO", "SECTIONS", "BenchConfig", "Lab", "generate_events", "run_bench",
           "run_core_profile", "wait_indexed"]


def _section(lab: Lab, section: str, report: dict[str, Any]) -> dict[str, Any]:
    cfg = lab.config
    if section == "throughput":
        return bench_throughput(lab)
    if section == "latency":
        base = cfg.latency_max_rate or report.get("throughput", {}).get(
            "precog", {}).get("median")
        if not base:
            base = statistics.median(lab.throughput_run("precog", cfg.events)["events_per_s"]
                                     for _ in range(cfg.reps))
        return bench_latency(lab, float(base))
    if section == "memory":
        return bench_memory(lab)
    if section == "scaling":
        return bench_scaling(lab)
    if section == "outcome":
        return bench_outcome(lab)
    if section == "core":
        from precog.bench.core import bench_core

        return bench_core(lab)
    if section == "batch":
        from precog.bench.batch import bench_batch

        return bench_batch(lab, report)
    if section == "mlserver":
        from precog.bench.mlserver import bench_mlserver

        return bench_mlserver(lab)
    return bench_profile(lab)


def machine() -> dict[str, Any]:
    """Cores, RAM, CPU model and versions of everything measured."""
    import os

    cpu = "unknown"  # the model name: psutil does not say; Linux's cpuinfo does
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import psutil

    mem_kb = psutil.virtual_memory().total // 1024
    libs = {}
    for dist in ("faust-streaming", "aiokafka", "confluent-kafka", "redis", "elasticsearch",
                 "fastavro", "lightgbm", "scikit-learn", "numpy", "river", "pyinstrument",
                 "quixstreams"):
        try:
            libs[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            libs[dist] = "absent"
    return {"cores": os.cpu_count(), "ram_gib": round(mem_kb / 2**20, 1), "cpu": cpu,
            "kernel": platform.release(), "python": platform.python_version(), "libraries": libs,
            "services": service_versions(Settings())}


def service_versions(s: Settings) -> dict[str, str]:
    from precog.io.elasticsearch import elasticsearch_client
    from precog.io.redis import redis_client

    out = {"kafka": s.stack.kafka_version + " (local stack)"}
    es = elasticsearch_client(s)
    try:
        nodes = es.nodes.info(filter_path="nodes.*.version")["nodes"]
        out["elasticsearch"] = ", ".join(sorted({str(n["version"]) for n in nodes.values()}))
    finally:
        es.close()
    r = redis_client(s, 5.0)
    try:
        out["redis"] = str(r.info("server")["redis_version"])
    finally:
        r.close()
    return out


def run_bench(config: BenchConfig, out_dir: Path, doc: Path | None, command: str,
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the configured sections; write the JSON (and the doc table); return the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report: dict[str, Any] = {"command": command, "config": asdict(config),
                              "started": int(started), "machine": machine()}
    lab = Lab(config, out_dir, echo)
    errors: dict[str, str] = {}
    try:
        lab.prepare()
        for section in config.sections:
            try:  # one failing section (e.g. the stack restarted) must not lose the others
                report[section] = _section(lab, section, report)
            except Exception as exc:
                errors[section] = f"{type(exc).__name__}: {exc}"
                echo(f"section {section} failed: {errors[section]}")
    finally:
        lab.close()
    report["errors"] = errors
    report["duration_s"] = round(time.time() - started, 1)
    report["targets"] = targets(report)
    report["missing"] = check_complete(report, config.sections)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    path = out_dir / f"bench-{stamp}{'-quick' if config.quick else ''}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    report["json_path"] = str(path)
    if doc is not None:
        update_doc(doc, render_markdown(report))
        report["doc_path"] = str(doc)
    echo(f"wrote {path}" + (f" and {doc}" if doc else "") + f" in {report['duration_s']:.0f}s")
    return report


def run_core_profile(config: BenchConfig, out_dir: Path, doc: Path | None, command: str,
                     echo: Callable[[str], None] = print) -> dict[str, Any]:
    """``precog bench --profile``: the core stages before and after, timed and profiled;
    the JSON and profiles go to ``out_dir``, the table to its own block of ``doc``."""
    from precog.bench.core_profile import profile_core

    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    lab = Lab(config, out_dir, echo)
    try:
        lab.prepare()
        result = profile_core(lab, out_dir, stamp)
    finally:
        lab.close()
    report = {"command": command, "config": asdict(config), "started": int(started),
              "machine": machine(), "core_profile": result}
    path = out_dir / f"core-profile-{stamp}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    before, after = result["total_before"], result["total_after"]
    echo(f"core: {before:.1f} us/event before, {after:.1f} after; wrote {path}")
    if doc is not None:
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
        update_doc(doc, render_core_profile(result, command, when), PROFILE_BEGIN, PROFILE_END)
        echo(f"wrote the core profile table into {doc}")
    return report
