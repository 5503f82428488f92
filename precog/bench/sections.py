"""The measurements of ``precog bench``, one function per section (docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import statistics
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

from precog.bench import io as bio
from precog.bench.cpu import CpuSampler, cpu_line, stack_pids, summarize_cpu, window_usage
from precog.bench.lab import Lab, record_rate, wait_indexed, worker_command
from precog.bench.report import (
    summarize,
)
from precog.settings import Settings

#: the throughput ratios (numerator, denominator), each computed per round
RATIOS = (("precog", "passthrough"), ("precog", "raw"), ("passthrough", "raw"),
          ("precog", "naive"), ("precog_index", "naive_index"), ("precog_index", "passthrough"),
          ("precog_index", "precog"), ("precog", "quix_passthrough"), ("precog", "quix_naive"),
          ("quix_passthrough", "passthrough"), ("precog_many", "precog"))


def bench_throughput(lab: Lab) -> dict[str, Any]:
    """Rounds of raw, passthrough, precog, precog on events of many entities, precog+index,
    naive, naive+index and the Quix Streams passthrough and naive apps; ratios per round."""
    cfg = lab.config
    plan = [("raw", cfg.events), ("passthrough", cfg.events), ("precog", cfg.events),
            ("precog_many", cfg.events),
            ("precog_index", cfg.events), ("naive", cfg.naive_events),
            ("naive_index", cfg.naive_index_events), ("quix_passthrough", cfg.events),
            ("quix_naive", cfg.naive_events)]
    rounds: list[dict[str, dict[str, Any]]] = []
    for r in range(cfg.reps):
        got: dict[str, dict[str, Any]] = {}
        for kind, n in plan:
            got[kind] = lab.throughput_run(kind, n)
            lab.echo(f"round {r + 1}: {kind:16s} {got[kind]['events_per_s']:9.0f} events/s"
                     + (f"  indexed {got[kind]['index_events_per_s']:.0f}/s"
                        if "index_events_per_s" in got[kind] else "")
                     + (f"  ({cpu_line(got[kind]['cpu'])})" if got[kind].get("cpu") else ""))
        rounds.append(got)

    def rate(kind: str, r: dict[str, dict[str, Any]]) -> float:
        # with indexing in the loop the rate is events fully indexed per second
        return float(r[kind].get("index_events_per_s", r[kind]["events_per_s"]))

    out: dict[str, Any] = {"events": {k: n for k, n in plan}, "rounds": rounds}
    out["entities"] = {"precog": len({k for k, _, _ in lab.pool[:cfg.events]}),
                       "precog_many": lab.many_distinct,
                       "precog_many_world": cfg.many_entities}
    for kind, _ in plan:
        out[kind] = summarize([rate(kind, r) for r in rounds])
    out["precog_index_scoring"] = summarize([r["precog_index"]["events_per_s"] for r in rounds])
    # cores used by each process while the rate was measured (precog.bench.cpu)
    out["cpu"] = {kind: summarize_cpu([r[kind]["cpu"] for r in rounds if r[kind].get("cpu")])
                  for kind, _ in plan if any(r[kind].get("cpu") for r in rounds)}
    out["cpu"]["precog_index_indexing"] = summarize_cpu(
        [r["precog_index"]["index_cpu"] for r in rounds if r["precog_index"].get("index_cpu")])
    out["ratios"] = {f"{a}_vs_{b}": summarize([rate(a, r) / rate(b, r) for r in rounds])
                     for a, b in RATIOS}
    return out


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def bench_latency(lab: Lab, max_rate: float) -> dict[str, Any]:
    """p50/p95/p99 produce -> prediction received, at the configured fractions of
    ``max_rate`` (25/50/75% unless ``--fractions``); and the same rates through the floor
    (:mod:`precog.bench.floor`: a Kafka hop that does no work), in every round right after
    the worker's."""
    cfg = lab.config
    fractions = tuple(cfg.latency_fractions)
    runs: dict[str, dict[float, list[dict[str, Any]]]] = {
        kind: {f: [] for f in fractions} for kind in ("precog", "floor")}
    # the maximum may be known only now (the throughput section's): enough events for all rates
    lab.ensure_pool(sum(int(f * max_rate * cfg.latency_seconds) for f in fractions) + 1)
    for r in range(cfg.reps):
        for kind, runs_of in runs.items():
            for f, row in zip(fractions, _probe_rates(lab, kind, max_rate, r), strict=True):
                runs_of[f].append(row)
    return {
        "max_rate": max_rate,
        "seconds_per_rate": cfg.latency_seconds,
        "warmup_s": cfg.latency_warmup,
        "rates": _latency_rows(runs["precog"]),
        "floor": _latency_rows(runs["floor"]),
    }


def _probe_rates(lab: Lab, kind: str, max_rate: float, r: int) -> list[dict[str, Any]]:
    """One process of ``kind`` (``precog``: the worker; ``floor``) in a fresh namespace, the
    probe at each fraction of ``max_rate`` in turn; a row per rate."""
    cfg = lab.config
    s = lab.namespace(1)
    proc = bio.Proc(s, worker_command(kind), lab.logs, f"latency-{kind}")
    # the producer and the receiver run in this process ("bench")
    sampler = CpuSampler({**stack_pids(s), "worker": proc.pid, "bench": os.getpid()})
    rows: list[dict[str, Any]] = []
    try:
        proc.wait_healthy()
        sampler.start()
        probe = bio.LatencyProbe(s, lab.source(s), s.topic("predictions"))
        start = 0
        for f in cfg.latency_fractions:
            rate = f * max_rate
            count = int(rate * cfg.latency_seconds)
            events = lab.pool[start:start + count]
            start += count
            if kind == "floor":  # forwarded as they are: the probe matches keys to event ids
                events = [(eid, value, eid) for _, value, eid in events]
            info = probe.run(events, rate, cfg.latency_warmup)
            lat = probe.latencies_ms
            row = {"offered_rate": info["offered_rate"], "measured": info["measured"],
                   "received": info["received"], "p50_ms": _percentile(lat, 50),
                   "p95_ms": _percentile(lat, 95), "p99_ms": _percentile(lat, 99),
                   "max_ms": max(lat) if lat else float("nan"),
                   "cpu": sampler.usage(*info["window"])}
            rows.append(row)
            lab.echo(f"latency round {r + 1}, {kind}, at {f:.0%} ({rate:.0f}/s): p50 "
                     f"{row['p50_ms']:.1f} p95 {row['p95_ms']:.1f} p99 {row['p99_ms']:.1f} ms"
                     f" ({info['received']}/{info['measured']}; {cpu_line(row['cpu'])})")
        proc.check_alive()
    finally:
        sampler.stop()
        proc.stop()
        lab.drop(s)
    return rows


def _latency_rows(runs: dict[float, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per fraction: the rounds' medians, the events not received, the cores."""
    return [
        {"fraction": f,
         **{k: summarize([row[k] for row in rows])
            for k in ("offered_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms")},
         "lost": sum(row["measured"] - row["received"] for row in rows),
         "cpu": summarize_cpu([row["cpu"] for row in rows if row["cpu"]])}
        for f, rows in runs.items()
    ]


def bench_memory(lab: Lab) -> dict[str, Any]:
    """Worker RSS while it scores ``memory_events`` pre-produced events."""
    n = lab.config.memory_events
    s = lab.namespace(1)
    samples: list[tuple[float, int, int]] = []
    try:
        bio.produce_all(s, lab.source(s), lab.events(n), timeout=600)
        proc = bio.Proc(s, worker_command("precog"), lab.logs, "memory")
        try:
            started = time.monotonic()
            deadline = started + 120 + n / 500
            done = 0
            topic = s.topic("predictions")
            while done < n:
                proc.check_alive()
                if time.monotonic() > deadline:
                    raise bio.BenchError(f"memory run: {done} of {n} after the deadline")
                done = bio.end_offsets(s, topic)
                samples.append((round(time.monotonic() - started, 2), done, proc.rss_bytes()))
                time.sleep(1.0)
            samples.append((round(time.monotonic() - started, 2), done, proc.rss_bytes()))
        finally:
            proc.stop()
    finally:
        lab.drop(s)
    warm_at = max(1, n // 10)
    warm = next(rss for _, d, rss in samples if d >= warm_at)
    end = samples[-1][2]
    lab.echo(f"memory: RSS {warm / 2**20:.0f} MiB after {warm_at} events, "
             f"{end / 2**20:.0f} MiB after {n}")
    return {"events": n, "warmup_events": warm_at, "rss_warm_bytes": warm, "rss_end_bytes": end,
            "rss_max_bytes": max(r for _, _, r in samples), "growth": end / warm - 1,
            "samples": samples}


def wait_group_stable(s: Settings, members: int, timeout: float = 60.0) -> None:
    """Until the score group (the events topic) has ``members`` members with partitions."""
    from confluent_kafka import ConsumerGroupState

    from precog.io import kafka

    admin = kafka.admin(s)
    group = s.group("score")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        desc = admin.describe_consumer_groups([group])[group].result(10)
        if (desc.state == ConsumerGroupState.STABLE and len(desc.members) == members
                and all(m.assignment.topic_partitions for m in desc.members)):
            return
        time.sleep(0.3)
    raise bio.BenchError(f"consumer group {group} not stable with {members} members")


def scaling_run(lab: Lab, workers: int, n: int) -> tuple[float, dict[str, float]]:
    """Workers started and balanced first, then ``n`` events produced in one burst: the
    events/s and the cores each process used meanwhile (``worker`` is all the workers)."""
    s = lab.namespace(1)
    procs: list[bio.Proc] = []
    sampler: CpuSampler | None = None
    try:
        procs = [bio.Proc(s, worker_command("precog"), lab.logs, f"scale{i}")
                 for i in range(workers)]
        for p in procs:
            p.wait_healthy()
        wait_group_stable(s, workers)
        sampler = CpuSampler({**stack_pids(s), **{f"worker{i + 1}": p.pid
                                                  for i, p in enumerate(procs)}}).start()
        bio.produce_all(s, lab.source(s), lab.events(n))
        bio.wait_records(s, s.topic("predictions"), n, 120 + n / 100, procs)
    finally:
        if sampler is not None:
            sampler.stop()
        for p in procs:
            p.stop()
    try:
        stamps = bio.record_timestamps(s, s.topic("predictions"), n)
        cpu = window_usage(sampler, stamps) if sampler is not None else {}
        cpu["worker"] = sum(v for k, v in cpu.items() if k.startswith("worker"))
        return record_rate(stamps), cpu
    finally:
        lab.drop(s)


def bench_scaling(lab: Lab) -> dict[str, Any]:
    cfg = lab.config
    workers: dict[str, list[float]] = {"1": [], "2": []}
    cpu: dict[str, list[dict[str, float]]] = {"1": [], "2": []}
    chall: dict[str, list[float]] = {"1": [], "2": [], "4": []}
    for r in range(cfg.reps):
        for w in (1, 2):
            rate, used = scaling_run(lab, w, cfg.scaling_events)
            workers[str(w)].append(rate)
            cpu[str(w)].append(used)
            lab.echo(f"scaling round {r + 1}: {w} worker(s) {rate:.0f} events/s "
                     f"({cpu_line(used)})")
        for c in (1, 2, 4):
            res = lab.throughput_run("precog", cfg.challenger_events, challengers=c)
            chall[str(c)].append(res["events_per_s"])
            lab.echo(f"scaling round {r + 1}: {c} challenger(s) {chall[str(c)][-1]:.0f} events/s")
    speedup = [b / a for a, b in zip(workers["1"], workers["2"], strict=True)]
    cost = {c: [1e6 / v for v in vals] for c, vals in chall.items()}  # µs per event
    return {
        "method": "workers started and balanced, then the events produced in one burst",
        "events": cfg.scaling_events,
        "workers": {k: summarize(v) for k, v in workers.items()},
        "cpu": {k: summarize_cpu(v) for k, v in cpu.items()},
        "speedup_2_vs_1": summarize(speedup),
        "challenger_events": cfg.challenger_events,
        "challenger_sets": {str(c): [str(ref) for ref in lab.roles(c).challengers]
                            for c in (1, 2, 4)},
        "challengers": {k: summarize(v) for k, v in chall.items()},
        "us_per_event": {k: summarize(v) for k, v in cost.items()},
    }


def bench_outcome(lab: Lab) -> dict[str, Any]:
    """The outcome path's pure core: join + River metrics + drift, labels per second."""
    from precog.avro import Codec
    from precog.monitor import JoinState, Monitor, MonitorConfig
    from precog.monitor.reference import Reference
    from precog.registry import ModelRegistry
    from precog.spec import parse_duration

    n = lab.config.outcome_labels
    predictions = scored_in_process(lab, n)
    codec = Codec.for_schema("prediction")
    labeled_codec = Codec.for_schema("labeled")
    outcome_codec = Codec.for_schema(lab.spec.outcome.schema_name)
    wire = [codec.encode(p) for p in predictions]
    outcomes = [outcome_codec.encode({
        "event_id": p["event_id"], "label": int(i % 50 == 0), "event_time": p["event_time"],
        "outcome_time": p["event_time"] + 60_000, "source": p["source"]})
        for i, p in enumerate(predictions)]
    registry = ModelRegistry(lab.template.registry_dir)

    def reference(model_id: str, version: int) -> Reference | None:
        raw = registry.get(model_id, version).reference
        return Reference.from_training(raw) if raw else None

    window = parse_duration(lab.spec.outcome.label_window)
    runs: dict[str, list[float]] = {"labels_per_s": [], "predictions_per_s": []}
    for _ in range(max(3, lab.config.reps)):
        state = JoinState(window, max_entries=10 * n)
        monitor = Monitor(MonitorConfig(namespace="bench", volume_window_ms=3_600_000),
                          references=reference)
        started = time.perf_counter()
        for value in wire:
            pred = codec.decode(value)
            state.on_prediction(pred)
            monitor.on_prediction(pred)
        mid = time.perf_counter()
        labels = 0
        for value in outcomes:  # join -> labeled topic (Avro) -> monitor, as the agents do
            out = state.on_outcome(outcome_codec.decode(value))
            for rec in out.labeled:
                monitor.on_labeled(labeled_codec.decode(labeled_codec.encode(rec)))
            labels += 1
        monitor.tick(predictions[-1]["event_time"] + 60_000)
        end = time.perf_counter()
        runs["predictions_per_s"].append(n / (mid - started))
        runs["labels_per_s"].append(labels / (end - mid))
    state_size = join_state_size(lab, predictions[: min(n, 5_000)], window)
    lab.echo(f"outcome path: {statistics.median(runs['labels_per_s']):.0f} labels/s")
    return {"labels": n, "models_per_label": 1 + len(predictions[0]["challengers"]),
            **{k: summarize(v) for k, v in runs.items()}, "join_state": state_size}


def join_state_size(lab: Lab, predictions: list[dict[str, Any]], window_ms: int) -> dict[str, Any]:
    """Bytes per pending prediction (JSON in the changelog, Python heap) and per label window."""
    from precog.monitor import JoinState

    state = JoinState(window_ms, max_entries=10 * len(predictions))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for p in predictions:
        state.on_prediction(p)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    heap = sum(s.size_diff for s in after.compare_to(before, "filename"))
    entries = len(state)
    json_bytes = sum(len(json.dumps(e)) for e in state.store.values())
    per_heap, per_json = heap / entries, json_bytes / entries
    cap = 2_000_000 * lab.template.kafka.partitions  # services/agents/join.py per partition cap
    window_s = window_ms / 1000
    return {
        "entries_measured": entries, "heap_bytes_per_entry": round(per_heap),
        "json_bytes_per_entry": round(per_json), "label_window_s": window_s,
        "entry_cap": cap,
        "at_rates": [
            {"events_per_s": r, "entries": min(int(r * window_s), cap),
             "heap_bytes": round(min(r * window_s, cap) * per_heap),
             "changelog_bytes": round(min(r * window_s, cap) * per_json)}
            for r in (1, 10, 100)
        ],
    }


def scored_in_process(lab: Lab, n: int) -> list[dict[str, Any]]:
    """Prediction records of the first ``n`` pool events, scored with the pure core."""
    import numpy as np

    from precog.avro import Codec
    from precog.features import Featurizer
    from precog.registry import ModelRegistry
    from precog.scoring import EventContext, make_model_set, prediction_record, score_batch

    registry = ModelRegistry(lab.template.registry_dir)
    roles = lab.roles(1)
    fz = Featurizer(lab.spec)
    models = make_model_set(1, registry.load(roles.leader.model_id, roles.leader.version),
                            [registry.load(c.model_id, c.version) for c in roles.challengers],
                            fz.names)
    codec = Codec.for_schema(lab.spec.event.schema_name)
    events = [codec.decode(v) for _, v, _ in lab.pool[:n]]
    ev = lab.spec.event
    vectors, _ = fz.featurize_batch({}, [(e, 0, i) for i, e in enumerate(events)])
    scores = score_batch(models, np.array([v.values for v in vectors], dtype=np.float64))
    return [
        prediction_record(
            spec_name=lab.spec.name, event_id=str(e[ev.id_field]),
            entity_id=str(e[ev.entity_field]), event_time=int(e[ev.time_field]),
            scored_time=int(e[ev.time_field]), models=models, scores=[float(s[i]) for s in scores],
            feature_names=fz.names, values=v.values, ages_ms=v.ages_ms,
            origin=EventContext("bench", 0, i), namespace="bench",
            event_schema="precog.events.Transaction/v1", code_version="bench", worker="bench")
        for i, (e, v) in enumerate(zip(events, vectors, strict=True))
    ]


def bench_profile(lab: Lab) -> dict[str, Any]:
    """One precog worker (score + index) under pyinstrument over ``profile_events`` events."""
    n = lab.config.profile_events
    s = lab.namespace(1)
    out = lab.work / "profile.html"
    try:
        bio.produce_all(s, lab.source(s), lab.events(n))
        proc = bio.Proc(s, ["precog.bench.apps", "profile", str(out), "control,score,index"],
                        lab.logs, "profile")
        try:
            bio.wait_records(s, s.topic("predictions"), n, 120 + n / 50, [proc])
            wait_indexed(s, n, 2, 120 + n / 50, proc)
        finally:
            import signal

            proc.stop(signal.SIGINT, timeout=60)
    finally:
        lab.drop(s)
    summary_path = out.with_suffix(".json")
    if not summary_path.exists():
        raise bio.BenchError(f"the profiled worker wrote no profile:\n{proc.log_tail()}")
    summary = json.loads(summary_path.read_text())
    return {"events": n, "html": str(out), "text": str(out.with_suffix(".txt")), **summary}


# -- the run ---------------------------------------------------------------------------
