"""Benchmark report: medians with spread, targets met or not, the Markdown table. Pure.

>>> summarize([3.0, 1.0, 2.0])
{'median': 2.0, 'min': 1.0, 'max': 3.0, 'runs': [3.0, 1.0, 2.0]}
>>> _fmt({'median': 1234.5, 'min': 1200.0, 'max': 1300.0, 'runs': [1.0, 2.0, 3.0]})
'1,234 (1,200-1,300)'
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from precog.bench.mlserver import markdown as mlserver_markdown

#: the p99 target at 50% of the maximum, and the budget the latency table reports the
#: highest offered rate within
LATENCY_BUDGET_MS = 50.0

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
#: the block ``precog bench --profile`` writes (the core before and after)
PROFILE_BEGIN = "<!-- core-profile:begin -->"
PROFILE_END = "<!-- core-profile:end -->"

#: what a complete report holds, per section
REQUIRED = {
    "throughput": ("raw", "passthrough", "precog", "precog_many", "precog_index", "naive",
                   "naive_index", "quix_passthrough", "quix_naive", "ratios"),
    "latency": ("rates", "floor", "max_rate"),
    "memory": ("rss_warm_bytes", "rss_end_bytes", "growth"),
    "scaling": ("workers", "speedup_2_vs_1", "challengers", "us_per_event"),
    "outcome": ("labels_per_s", "predictions_per_s", "join_state"),
    "profile": ("self", "inclusive", "total_s"),
    "core": ("us_per_event", "total_us_per_event", "reference_total_us_per_event"),
    "batch": ("events", "events_per_s", "worker_events_per_s", "ratio"),
    "mlserver": ("precog", "mlserver", "p99_ratio", "saturation_ratio"),
}


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, min and max of the runs (and the runs themselves)."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "runs": []}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def check_complete(report: dict[str, Any], sections: Sequence[str]) -> list[str]:
    """What the report lacks for ``sections`` (empty when complete).

    >>> check_complete({"memory": {"growth": 0.01}}, ["memory"])[-2:]
    ['memory.rss_warm_bytes', 'memory.rss_end_bytes']
    """
    missing = [name for name in ("machine", "command", "config") if name not in report]
    for section in sections:
        body = report.get(section)
        if not isinstance(body, dict):
            missing.append(section)
            continue
        missing += [f"{section}.{k}" for k in REQUIRED[section] if k not in body]
    return missing


def _med(report: dict[str, Any], *path: str) -> float | None:
    node: Any = report
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    if isinstance(node, dict):
        node = node.get("median")
    return None if node is None or (isinstance(node, float) and math.isnan(node)) else float(node)


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured median and whether it was met.

    >>> t = targets({"memory": {"growth": 0.04}})
    >>> [(x["name"], x["met"]) for x in t if x["value"] is not None]
    [('RSS growth after warm-up', True)]
    """
    p99, floor = _p99_at_half(report, "rates"), _p99_at_half(report, "floor")
    core = (report.get("core") or {}).get("total_us_per_event")
    rows = [
        ("precog / Faust passthrough", ">= 2.0x", _med(report, "throughput", "ratios",
                                                       "precog_vs_passthrough"),
         lambda v: v >= 2.0),
        ("precog / Quix Streams passthrough", ">= 0.25x",
         _med(report, "throughput", "ratios", "precog_vs_quix_passthrough"),
         lambda v: v >= 0.25),
        ("precog with indexing / without", ">= 0.6x", _med(report, "throughput", "ratios",
                                                          "precog_index_vs_precog"),
         lambda v: v >= 0.6),
        ("precog core in process", "<= 30 us/event", None if core is None else float(core),
         lambda v: v <= 30),
        ("2 workers / 1", ">= 1.8x", _med(report, "scaling", "speedup_2_vs_1"),
         lambda v: v >= 1.8),
        # the naive pipeline includes one Elasticsearch request per document, so the
        # like-for-like pair is the whole job on both sides: precog with its index agent
        ("precog / naive", ">= 10x (both with Elasticsearch)",
         _med(report, "throughput", "ratios", "precog_index_vs_naive_index"),
         lambda v: v >= 10),
        ("p99 latency at 50% of max", f"<= {LATENCY_BUDGET_MS:.0f} ms", p99,
         lambda v: v <= LATENCY_BUDGET_MS),
        ("batch scoring / streaming worker (events/s per process)", ">= 20x",
         _med(report, "batch", "ratio"), lambda v: v >= 20),
        ("precog serve p99 / MLServer p99 (V2, median over the rates)", "<= 1.5x",
         _median_of((report.get("mlserver") or {}).get("p99_ratio")), lambda v: v <= 1.5),
        ("RSS growth after warm-up", "<= 10%",
         None if "memory" not in report else float(report["memory"]["growth"]),
         lambda v: v <= 0.10),
    ]
    out = [{"name": n, "target": t, "value": v, "met": None if v is None else bool(ok(v))}
           for n, t, v, ok in rows]
    if floor is not None:  # the no-work hop's p99 at the same rate (precog.bench.floor)
        next(t for t in out if t["name"] == "p99 latency at 50% of max")["floor"] = floor
    return out


def _p99_at_half(report: dict[str, Any], rows: str) -> float | None:
    """The median p99 at 50% of the maximum of the latency section's ``rows`` (the worker's
    ``rates``, or the ``floor``'s)."""
    for row in (report.get("latency") or {}).get(rows, []):
        if row.get("fraction") == 0.5:
            return _med(row, "p99_ms")
    return None


def _median_of(values: dict[str, float] | None) -> float | None:
    return statistics.median(values.values()) if values else None


def _fmt(s: Any, digits: int = 0, scale: float = 1.0) -> str:
    if s is None:
        return "-"
    if not isinstance(s, dict):
        return f"{float(s) * scale:,.{digits}f}"
    med, lo, hi = (float(s[k]) * scale for k in ("median", "min", "max"))
    if len(s.get("runs", [])) <= 1:
        return f"{med:,.{digits}f}"
    return f"{med:,.{digits}f} ({lo:,.{digits}f}-{hi:,.{digits}f})"


def _mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def render_markdown(report: dict[str, Any]) -> str:
    """The generated part of docs/benchmarks.md."""
    m = report["machine"]
    cfg = report["config"]
    lines = [
        BEGIN,
        "",
        f"Generated by `{report['command']}` on {_when(report)} in "
        f"{report.get('duration_s', 0) / 60:.1f} min"
        + (" (**--quick**: tiny sizes, one run each; not for publishing)" if cfg["quick"] else "")
        + ". Medians of "
        f"{cfg['reps']} run(s), spread (min-max) in brackets.",
        "",
        "| machine | |",
        "|---|---|",
        f"| CPU | {m['cpu']}, {m['cores']} cores |",
        f"| RAM | {m['ram_gib']} GiB |",
        f"| Python | {m['python']} (Linux {m['kernel']}) |",
        f"| services | Kafka {m['services']['kafka']}, Elasticsearch "
        f"{m['services']['elasticsearch']}, Redis {m['services']['redis']} (all on this machine) |",
        "| libraries | " + ", ".join(f"{k} {v}" for k, v in m["libraries"].items()) + " |",
        "",
    ]
    tg = report.get("targets", [])
    if tg:
        lines += ["### Targets", "", "| target | goal | measured | |", "|---|---|---|---|"]
        for t in tg:
            v = t["value"]
            shown = "-" if v is None else (f"{v:.1%}" if "growth" in t["name"] else
                                           f"{v:.1f} ms" if "latency" in t["name"] else
                                           f"{v:.1f} us" if "core" in t["name"] else
                                           f"{v:.2f}x")
            if t.get("floor") is not None:
                shown += f" (no-work floor {t['floor']:.1f} ms)"
            verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "**not met**")
            lines.append(f"| {t['name']} | {t['goal'] if 'goal' in t else t['target']} | "
                         f"{shown} | {verdict} |")
        lines.append("")
    lines += _throughput(report) + _latency(report) + _memory(report) + _scaling(report)
    lines += _cpu(report)
    lines += _core(report) + _batch(report) + _outcome(report) + _profile(report)
    lines += mlserver_markdown(report.get("mlserver"))
    for section, error in (report.get("errors") or {}).items():
        lines += [f"**Section {section} failed:** `{_short(error)[:300]}`", ""]
    lines += [END]
    return "\n".join(lines) + "\n"


def _when(report: dict[str, Any]) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(report.get("started", 0)))


def _throughput(report: dict[str, Any]) -> list[str]:
    t = report.get("throughput")
    if not t:
        return []
    n = t["events"]
    entities = t.get("entities", {})
    rows = [
        ("raw confluent-kafka consume -> produce", "raw"),
        ("Faust passthrough (consume -> produce, no work)", "passthrough"),
        ("**precog** worker: Avro, Redis features, leader + challenger, Avro out"
         + (f" ({entities['precog']:,} entities in the run)" if entities else ""), "precog"),
        ("**precog** worker, the same on events of "
         f"{entities.get('precog_many_world', 0):,} entities "
         f"({entities.get('precog_many', 0):,} in the run)", "precog_many"),
        ("**precog** + Elasticsearch indexing (events fully indexed /s)", "precog_index"),
        ("naive: per-event Redis GET/SET, single-row predict", "naive"),
        ("naive + one Elasticsearch request per document", "naive_index"),
        ("Quix Streams passthrough (consume -> produce, no work)", "quix_passthrough"),
        ("Quix Streams naive: per-record decode, Redis GET/SET, single-row predict",
         "quix_naive"),
    ]
    out = ["### Throughput of one worker process (events/s)", "",
           "| pipeline | events per run | events/s |", "|---|---|---|"]
    # reports written before the Quix baselines have none of their rows
    out += [f"| {label} | {n[k]:,} | {_fmt(t[k])} |" for label, k in rows if k in t]
    r = t["ratios"]
    out += ["", "| ratio (per round, then median) | value |", "|---|---|",
            f"| precog / Faust passthrough | {_fmt(r['precog_vs_passthrough'], 2)} |",
            f"| precog / raw confluent-kafka | {_fmt(r['precog_vs_raw'], 2)} |",
            f"| Faust passthrough / raw | {_fmt(r['passthrough_vs_raw'], 2)} |",
            *([f"| precog, many entities / precog | {_fmt(r['precog_many_vs_precog'], 2)} |"]
              if "precog_many_vs_precog" in r else []),
            f"| precog / naive, both without Elasticsearch | {_fmt(r['precog_vs_naive'], 1)} |",
            "| precog + indexing / naive + indexing (the target's pair) | "
            f"{_fmt(r['precog_index_vs_naive_index'], 1)} |",
            "| precog + indexing / Faust passthrough | "
            f"{_fmt(r['precog_index_vs_passthrough'], 2)} |"]
    if "precog_vs_quix_passthrough" in r:
        out += [f"| precog / Quix Streams passthrough | "
                f"{_fmt(r['precog_vs_quix_passthrough'], 2)} |",
                f"| precog / Quix Streams naive | {_fmt(r['precog_vs_quix_naive'], 1)} |",
                "| Quix Streams passthrough / Faust passthrough | "
                f"{_fmt(r['quix_passthrough_vs_passthrough'], 1)} |"]
    out += [""]
    return out


def _latency(report: dict[str, Any]) -> list[str]:
    lat = report.get("latency")
    if not lat:
        return []
    out = ["### Latency: event produced -> prediction received (ms)", "",
           f"Worker `control,score`; offered rates are fractions of the measured maximum "
           f"{lat['max_rate']:,.0f} events/s; {lat['seconds_per_rate']:.0f} s per rate, the "
           f"first {lat['warmup_s']:.0f} s not counted. *Late*: events whose prediction had not"
           " arrived 5 s after the last was sent; they are not in the percentiles, so where"
           " the worker falls behind the offered rate the percentiles understate it.", "",
           "*Cores*: worker / Kafka / the benchmark's producer and receiver / idle, medians"
           " (`precog/bench/cpu.py`).", "",
           "| offered | events/s | p50 | p95 | p99 | max | late | cores |",
           "|---|---|---|---|---|---|---|---|"]
    out += [_latency_row(row) for row in lat["rates"]]
    out += ["", within_budget(lat["rates"])]
    if lat.get("floor"):
        out += ["", "*Floor*: the same rates, in the same rounds, through a Kafka hop that does"
                " no work (`precog/bench/floor.py`: consume -> produce with the worker's producer"
                " settings, events keyed by event id): what the machine, the broker and the"
                " probe cost an event before any worker does anything. *Cores*: the hop / Kafka"
                " / producer and receiver / idle.", "",
                "| offered | events/s | p50 | p95 | p99 | max | late | cores |",
                "|---|---|---|---|---|---|---|---|"]
        out += [_latency_row(row) for row in lat["floor"]]
    return out + [""]


def within_budget(rows: list[dict[str, Any]], budget_ms: float = LATENCY_BUDGET_MS) -> str:
    """The sentence under the latency table: the highest offered rate whose median p99 was
    within ``budget_ms`` with no event late (what a deployment sizes by).

    >>> rows = [{"fraction": f, "offered_rate": {"median": r}, "p99_ms": {"median": p},
    ...          "lost": 0} for f, r, p in ((0.1, 3000.0, 21.0), (0.2, 6000.0, 48.5),
    ...                                     (0.3, 9000.0, 75.0))]
    >>> within_budget(rows)
    'Highest offered rate with a p99 within 50 ms: 20% of the maximum (6,000 events/s).'
    >>> within_budget(rows[2:])
    'None of the offered rates had a p99 within 50 ms.'
    """
    ok = [r for r in rows if not r["lost"] and (p := _med(r, "p99_ms")) is not None
          and p <= budget_ms]
    if not ok:
        return f"None of the offered rates had a p99 within {budget_ms:.0f} ms."
    best = max(ok, key=lambda r: r["fraction"])
    return (f"Highest offered rate with a p99 within {budget_ms:.0f} ms: {best['fraction']:.0%}"
            f" of the maximum ({_fmt(_med(best, 'offered_rate'))} events/s).")


def _latency_row(row: dict[str, Any]) -> str:
    cpu = row.get("cpu") or {}
    cores = " / ".join(_fmt(cpu.get(k), 2) for k in ("worker", "kafka", "bench", "idle")) \
        if cpu else "-"
    return (f"| {row['fraction']:.0%} | {_fmt(row['offered_rate'])} | "
            f"{_fmt(row['p50_ms'], 1)} | {_fmt(row['p95_ms'], 1)} | "
            f"{_fmt(row['p99_ms'], 1)} | {_fmt(row['max_ms'], 1)} | {row['lost']} | "
            f"{cores} |")


def _memory(report: dict[str, Any]) -> list[str]:
    mem = report.get("memory")
    if not mem:
        return []
    return ["### Memory of the worker (`control,score`)", "",
            "| events | RSS after warm-up | RSS at the end | max | growth |",
            "|---|---|---|---|---|",
            f"| {mem['events']:,} (warm-up {mem['warmup_events']:,}) | "
            f"{_mib(mem['rss_warm_bytes'])} | {_mib(mem['rss_end_bytes'])} | "
            f"{_mib(mem['rss_max_bytes'])} | {mem['growth']:+.1%} |", ""]


def _scaling(report: dict[str, Any]) -> list[str]:
    sc = report.get("scaling")
    if not sc:
        return []
    out = ["### Scaling", "",
           f"Worker processes ({sc['method']}; {sc['events']:,} events):", "",
           "| workers | events/s | speed-up |", "|---|---|---|",
           f"| 1 | {_fmt(sc['workers']['1'])} | 1 |",
           f"| 2 | {_fmt(sc['workers']['2'])} | {_fmt(sc['speedup_2_vs_1'], 2)} |", "",
           f"Challengers ({sc['challenger_events']:,} events, one worker):", "",
           "| challengers | models | events/s | us per event |", "|---|---|---|---|"]
    for c in ("1", "2", "4"):
        out.append(f"| {c} | leader + {', '.join(sc['challenger_sets'][c])} | "
                   f"{_fmt(sc['challengers'][c])} | {_fmt(sc['us_per_event'][c])} |")
    return out + [""]


def _cpu(report: dict[str, Any]) -> list[str]:
    """Cores each process used while a rate was measured (precog.bench.cpu)."""
    t = (report.get("throughput") or {}).get("cpu") or {}
    sc = (report.get("scaling") or {}).get("cpu") or {}
    rows = [("Faust passthrough", t.get("passthrough")),
            ("Quix Streams passthrough", t.get("quix_passthrough")),
            ("precog worker (`control,score`)", t.get("precog")),
            ("precog worker, many entities", t.get("precog_many")),
            ("precog + indexing, first to last prediction", t.get("precog_index")),
            ("precog + indexing, first scored to last indexed", t.get("precog_index_indexing")),
            ("scaling: 1 worker", sc.get("1")),
            ("scaling: 2 workers (both)", sc.get("2"))]
    shown = [(label, u) for label, u in rows if u is not None and u]
    if not shown:
        return []
    cols = ("worker", "kafka", "elasticsearch", "redis", "other", "machine", "idle")
    cores = report.get("machine", {}).get("cores", "?")
    out = ["### Where the CPU went (cores used while the rate was measured)", "",
           f"CPU seconds per second of each process tree over the measured window "
           f"(`precog/bench/cpu.py`; {cores} cores in all): *machine* is everything that ran, "
           "*other* what no named process accounts for (the benchmark's own producer or "
           "reader, the OS), *idle* the cores left.", "",
           "| run | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, u in shown:
        out.append(f"| {label} | " + " | ".join(_fmt(u.get(c), 2) for c in cols) + " |")
    return out + [""]


def _core(report: dict[str, Any]) -> list[str]:
    co = report.get("core")
    if not co:
        return []
    us = co["us_per_event"]
    out = ["### Core in process (no I/O)", "",
           f"{co['events']:,} events in batches of {co['batch']}, medians of {co['passes']} "
           "passes: the score agent's stages (precog/bench/core.py).", "",
           "| stage | us/event |", "|---|---|"]
    out += [f"| {stage} | {us[stage]:.1f} |"
            for stage in ("decode", "validate", "featurize", "score", "encode")]
    out += [f"| **total** | **{co['total_us_per_event']:.1f}** |", "",
            f"The reference encode (a `prediction_record` dict per event, then fastavro, the "
            f"agent's path before the compiled writer) took {us['reference_encode']:.1f} us/event"
            f" in the same passes: total {co['reference_total_us_per_event']:.1f} us/event.", ""]
    idle = co.get("after_idle")
    if idle:
        out += [f"**After idle.** The same stages on batches of {idle['batch']}: "
                f"{idle['busy_ms_per_batch']:.2f} ms of CPU per batch back to back, "
                f"{idle['after_idle_ms_per_batch']:.2f} ms when each batch follows "
                f"{idle['idle_s'] * 1e3:.0f} ms asleep ({idle['ratio']:.2f}x, "
                f"+{idle['penalty_ms']:.2f} ms; medians of {idle['rounds']} rounds of "
                f"{idle['batches']} batches). A worker at a moderate rate wakes like that for "
                "every batch; what this costs is the machine's, not the code's.", ""]
    return out


def _batch(report: dict[str, Any]) -> list[str]:
    ba = report.get("batch")
    if not ba:
        return []
    return ["### Batch scoring (`precog score-batch`, in process)", "",
            f"{ba['events']:,} events from an Avro file, leader + challenger, states rebuilt"
            f" from the input, chunks of {ba['chunk']:,} (precog/bench/batch.py): rows/s after"
            f" the first chunk, as the worker's rate leaves out its start (the whole run, with"
            f" start-up and model loading, beside the ratio); the worker's rate:"
            f" {ba['worker_from']}.", "",
            "| pipeline | events/s per process | vs the worker |", "|---|---|---|",
            f"| streaming worker (`control,score`) | {_fmt(ba['worker_events_per_s'])} | 1 |",
            f"| score-batch -> Parquet | {_fmt(ba['events_per_s'])} |"
            f" {_fmt(ba['ratio'], 2)} (whole run {_fmt(ba['whole_run_events_per_s'])}/s) |",
            f"| score-batch -> Avro | {_fmt(ba['avro_events_per_s'])} |"
            f" {_fmt(ba['avro_ratio'], 2)} (whole run"
            f" {_fmt(ba['avro_whole_run_events_per_s'])}/s) |", ""]


def _outcome(report: dict[str, Any]) -> list[str]:
    oc = report.get("outcome")
    if not oc:
        return []
    js = oc["join_state"]
    out = ["### Outcome path (pure core, in process)", "",
           f"{oc['labels']:,} outcomes, {oc['models_per_label']} models per event: decode, join, "
           "labeled record encoded/decoded, River metrics + concept drift.", "",
           "| step | per second |", "|---|---|",
           f"| predictions into the join + prediction/data drift | "
           f"{_fmt(oc['predictions_per_s'])} |",
           f"| outcomes -> labels -> metrics + drift | {_fmt(oc['labels_per_s'])} |", "",
           f"Join state: {js['heap_bytes_per_entry']:,} bytes of Python heap and "
           f"{js['json_bytes_per_entry']:,} bytes of JSON (changelog) per pending prediction; "
           f"label window {js['label_window_s'] / 86400:.0f} d, cap "
           f"{js['entry_cap']:,} entries.", "",
           "| events/s | pending entries | heap | changelog |", "|---|---|---|---|"]
    for row in js["at_rates"]:
        out.append(f"| {row['events_per_s']} | {row['entries']:,} | {_mib(row['heap_bytes'])} | "
                   f"{_mib(row['changelog_bytes'])} |")
    return out + [""]


def _profile(report: dict[str, Any]) -> list[str]:
    pr = report.get("profile")
    if not pr:
        return []
    out = [f"### Profile (pyinstrument, worker `control,score,index`, {pr['events']:,} events, "
           f"{pr['total_s']:.0f} s sampled)", "", "| top self time | share |", "|---|---|"]
    out += [f"| `{_short(r['function'])}` | {r['share']:.1%} |" for r in pr["self"][:12]]
    return out + [""]


def _short(name: str) -> str:
    return re.sub(r"\s+", " ", name).replace("|", "/")


def render_core_profile(result: dict[str, Any], command: str, when: str) -> str:
    """The block of docs/benchmarks.md that ``precog bench --profile`` writes.

    >>> us = {"before": dict.fromkeys(("decode", "validate", "featurize", "score", "build",
    ...                                "encode", "index_decode"), 2.0),
    ...       "after": dict.fromkeys(("decode", "validate", "featurize", "score", "encode",
    ...                               "index_decode"), 1.0)}
    >>> block = render_core_profile({"events": 10, "batch": 5, "passes": 3, "us_per_event": us,
    ...     "total_before": 12.0, "total_after": 5.0, "profiles": {}}, "precog bench", "now")
    >>> [line for line in block.splitlines() if line.startswith("| **")]
    ['| **score agent total** | **12.0** | **5.0** | |']
    """
    from precog.bench.core_profile import BOUGHT

    before, after = result["us_per_event"]["before"], result["us_per_event"]["after"]
    rows = [("decode (events)", before["decode"], after["decode"], BOUGHT["decode"]),
            ("validate", before["validate"], after["validate"], BOUGHT["validate"]),
            ("featurize", before["featurize"], after["featurize"], BOUGHT["featurize"]),
            ("score", before["score"], after["score"], BOUGHT["score"]),
            ("build + encode the prediction", before["build"] + before["encode"],
             after["encode"], BOUGHT["encode"])]
    out = [PROFILE_BEGIN, "",
           f"Generated by `{command}` on {when}: {result['events']:,} events in batches of "
           f"{result['batch']}, medians of {result['passes']} interleaved passes of each path "
           "(precog/bench/core_profile.py).", "",
           "| stage | before (us/event) | after (us/event) | what bought it |",
           "|---|---|---|---|"]
    out += [f"| {name} | {b:.1f} | {a:.1f} | {why} |" for name, b, a, why in rows]
    out += [f"| **score agent total** | **{result['total_before']:.1f}** | "
            f"**{result['total_after']:.1f}** | |",
            f"| index agent: decode a prediction | {before['index_decode']:.1f} | "
            f"{after['index_decode']:.1f} | {BOUGHT['index_decode']} |", ""]
    for side, path in result["profiles"].items():
        out.append(f"- pyinstrument profile, {side}: `{Path(path).name}` (and `.txt`), "
                   "in the output directory")
    return "\n".join([*out, "", PROFILE_END]) + "\n"


def update_doc(path: Path, generated: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the block between ``begin`` and ``end`` of ``path`` (or create the page)."""
    if path.exists():
        text = path.read_text()
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            tail = rest.split(end, 1)[1]
            path.write_text(head + generated.rstrip("\n") + tail)
            return
        path.write_text(text.rstrip("\n") + "\n\n" + generated)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Benchmarks\n\n" + generated)
