"""``precog history``: check a history directory, or write one from Avro, CSV or Parquet files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from precog.errors import ConfigError
from precog.settings import get_settings
from precog.spec import PipelineSpec, load_spec

app = typer.Typer(help="The history files `precog train` and `precog backfill` read"
                       " (docs/features.md).", no_args_is_help=True)

SpecOption = Annotated[
    Path | None, typer.Option("--spec", help="pipeline spec (default: settings.spec)")
]


def _spec(path: Path | None) -> PipelineSpec:
    return load_spec(path or get_settings().spec)


@app.command("check")
def check_cmd(
    path: Annotated[Path, typer.Argument(help="history directory (events.avro, outcomes.avro)"
                                              " or one of its files")],
    spec: SpecOption = None,
) -> None:
    """Read a history as `precog train` does; exit 2 with one line naming what is wrong."""
    from precog.avro import Codec
    from precog.history import OUTCOMES_FILE, check_history, read_records

    pipeline = _spec(spec)
    if path.is_dir():
        typer.echo(f"{path}: ok, {check_history(path, pipeline).summary()}")
        return
    if not path.exists():
        raise ConfigError(f"{path}: no such file or directory")
    outcomes = path.name == OUTCOMES_FILE
    schema = pipeline.outcome.schema_name if outcomes else pipeline.event.schema_name
    records = read_records(path, Codec.for_schema(schema))
    typer.echo(f"{path}: ok, {len(records):,} {'outcomes' if outcomes else 'events'}"
               f" ({schema})")


@app.command("write")
def write_cmd(
    source: Annotated[Path, typer.Option("--from", help="events: .avro, .csv or .parquet")],
    out: Annotated[Path, typer.Option("--out", help="history directory to write")],
    outcomes: Annotated[Path | None, typer.Option(
        "--outcomes", help="outcomes: .avro, .csv or .parquet (default: none known yet)")] = None,
    spec: SpecOption = None,
    force: Annotated[bool, typer.Option(
        "--force", help="replace the history already in --out")] = False,
) -> None:
    """Convert files of the spec's event (and outcome) schema into a history directory."""
    from precog.avro import Codec
    from precog.history import (
        EVENTS_FILE,
        OUTCOMES_FILE,
        check_out,
        read_records,
        write_records,
        writing_history,
    )

    check_out(out, force)
    pipeline = _spec(spec)
    event_codec = Codec.for_schema(pipeline.event.schema_name)
    outcome_codec = Codec.for_schema(pipeline.outcome.schema_name)
    events = read_records(source, event_codec)
    if not events:
        raise ConfigError(f"--from {source}: no events in it")
    known = read_records(outcomes, outcome_codec) if outcomes is not None else []
    if outcomes is not None and not known:
        raise ConfigError(f"--outcomes {outcomes}: no outcomes in it (leave --outcomes out"
                          " when none are known yet)")
    with writing_history(out) as part:
        n = write_records(part(EVENTS_FILE), event_codec, events)
        m = write_records(part(OUTCOMES_FILE), outcome_codec, known)
    typer.echo(f"wrote {n:,} events and {m:,} outcomes to {out}")
