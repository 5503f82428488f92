"""``precog bench``: throughput, baselines, latency, memory and scaling on the local stack."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from precog.errors import ConfigError

app = typer.Typer(help="Benchmarks on the local stack (docs/benchmarks.md).")
DEFAULT_OUT = Path("bench-results")
_DOC_HELP = ("page whose generated table is rewritten (default docs/benchmarks.md;"
             " with --quick bench-results/benchmarks-quick.md)")


@app.callback(invoke_without_command=True)
def bench(
    quick: bool = typer.Option(False, "--quick", help="tiny sizes, one run each (smoke test)"),
    reps: int = typer.Option(0, help="runs per measurement (default 3, --quick 1)"),
    events: int = typer.Option(0, help="events per throughput run (default 50000, quick 3000)"),
    memory_events: int = typer.Option(0, help="events of the memory run (default 1000000)"),
    batch_events: int = typer.Option(0, help="events of the batch scoring runs (default"
                                             " 200000, quick 5000)"),
    max_rate: float = typer.Option(0.0, help="latency: the events/s its 25/50/75% are taken"
                                   " of (default: measured in the throughput section; quick"
                                   " 4000)"),
    latency_seconds: float = typer.Option(0.0, help="latency: seconds per offered rate"
                                          " (default 15, quick 3)"),
    fractions: str = typer.Option("", help="latency: the offered rates as comma-separated"
                                  " fractions of the maximum (default 0.25,0.5,0.75); e.g."
                                  " 0.1,0.2,0.3,0.4 to find the rate a p99 budget allows"),
    sections: str = typer.Option(
        "throughput,latency,memory,scaling,outcome,core,batch,mlserver,profile",
        help="comma-separated sections"
    ),
    out: Annotated[Path, typer.Option(help="directory for the JSON results")] = DEFAULT_OUT,
    doc: Annotated[Path | None, typer.Option(help=_DOC_HELP)] = None,
    no_doc: bool = typer.Option(False, "--no-doc", help="write the JSON only"),
    profile: bool = typer.Option(
        False, "--profile", help="only the core stages before and after the batch changes, "
        "timed and under pyinstrument (profiles in --out, the table in its own block of the "
        "page; --sections is not used)"),
) -> None:
    """Run the benchmarks; every number is a median of several runs with its spread."""
    from precog.bench.lab import latency_fractions
    from precog.bench.runner import SECTIONS, BenchConfig, run_bench, run_core_profile

    chosen = tuple(s.strip() for s in sections.split(",") if s.strip())
    unknown = set(chosen) - set(SECTIONS)
    if unknown or not chosen:
        raise ConfigError(f"unknown sections {sorted(unknown)}; choose from {list(SECTIONS)}")
    if min(reps, events, memory_events, batch_events, max_rate, latency_seconds) < 0:
        raise ConfigError("--reps, --events, --memory-events, --batch-events, --max-rate and"
                          " --latency-seconds must be positive")
    # --profile runs the core only (and generates no events for the other sections)
    overrides: dict[str, object] = {"sections": ("core",) if profile else chosen}
    if reps:
        overrides["reps"] = reps
    if events:
        overrides["events"] = events
    if memory_events:
        overrides["memory_events"] = memory_events
    if batch_events:
        overrides["batch_events"] = batch_events
    if max_rate:
        overrides["latency_max_rate"] = max_rate
    if latency_seconds:
        overrides["latency_seconds"] = latency_seconds
    if fractions:
        try:
            overrides["latency_fractions"] = latency_fractions(fractions)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    config = (BenchConfig.quick_config(**overrides) if quick
              else BenchConfig(**overrides))  # type: ignore[arg-type]
    if doc is None:
        doc = out / "benchmarks-quick.md" if quick else Path("docs/benchmarks.md")
    command = "./scripts/bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]
                                           if a != "bench")
    run = run_core_profile if profile else run_bench
    run(config, out, None if no_doc else doc, command.strip(),
        echo=lambda msg: typer.echo(f"[bench] {msg}"))
