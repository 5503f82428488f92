"""``precog score-batch``: score an events file or a Kafka range like the worker does."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from precog.cli.replay import EndOffsetOption, EndOption, StartOffsetOption, StartOption
from precog.errors import ConfigError
from precog.settings import get_settings
from precog.spec import load_spec

app = typer.Typer(
    help="Score a file (Avro, Parquet, CSV, JSON lines) or a Kafka range into Parquet or Avro"
         " with the same features and models as the worker (docs/batch-scoring.md).",
    invoke_without_command=True,
)


def parse_ref(text: str, option: str) -> dict[str, Any]:
    """``MODEL:VERSION`` (or ``MODEL@VERSION``) as a model-control reference.

    >>> parse_ref("fraud-lgbm:3", "--leader")
    {'model_id': 'fraud-lgbm', 'version': 3}
    >>> parse_ref("fraud-lgbm", "--leader")
    Traceback (most recent call last):
    ...
    precog.errors.ConfigError: --leader 'fraud-lgbm': use MODEL:VERSION, e.g. fraud-lgbm:1
    """
    model, sep, version = text.replace("@", ":").rpartition(":")
    if not sep or not model or not version.isdigit():
        raise ConfigError(f"{option} {text!r}: use MODEL:VERSION, e.g. fraud-lgbm:1")
    return {"model_id": model, "version": int(version)}


@app.callback()
def score_batch(
    out: Annotated[Path, typer.Option(
        "--out", help="output: a directory of Parquet parts, or FILE.avro (see --format)")],
    input: Annotated[Path | None, typer.Option(
        "--input", help="events file: .avro, .parquet, .csv or .jsonl")] = None,
    input_format: Annotated[str | None, typer.Option(
        "--input-format", help="avro | parquet | csv | jsonl (default: from the suffix)")
    ] = None,
    topic: Annotated[str | None, typer.Option(
        "--topic", help="read a Kafka topic instead (without namespace, e.g."
                        " events.transactions)")] = None,
    start: StartOption = None,
    end: EndOption = None,
    start_offset: StartOffsetOption = None,
    end_offset: EndOffsetOption = None,
    out_format: Annotated[str | None, typer.Option(
        "--format", help="parquet | avro (default: avro for --out *.avro, else parquet)")
    ] = None,
    from_redis: Annotated[bool, typer.Option(
        "--from-redis", help="start entity states from the namespace's Redis state")] = False,
    from_snapshot: Annotated[Path | None, typer.Option(
        "--from-snapshot", help="start entity states from a snapshot file (--state-out)")
    ] = None,
    state_out: Annotated[Path | None, typer.Option(
        "--state-out", help="write the entity states the run ends with (a snapshot file)")
    ] = None,
    leader: Annotated[str | None, typer.Option(
        "--leader", help="MODEL:VERSION instead of the namespace's roles")] = None,
    challenger: Annotated[list[str] | None, typer.Option(
        "--challenger", help="MODEL:VERSION (repeatable; with --leader)")] = None,
    index: Annotated[bool, typer.Option(
        "--index", help="also index the predictions into Elasticsearch")] = False,
    index_namespace: Annotated[str | None, typer.Option(
        "--index-namespace", help="index into <ns>-predictions (default: PRECOG_NAMESPACE)")
    ] = None,
    chunk_size: Annotated[int, typer.Option(
        "--chunk-size", help="input rows per chunk: one featurize and predict each")] = 10_000,
    model_threads: Annotated[int, typer.Option(
        "--model-threads", help="LightGBM prediction threads (0: all cores; at most the CPUs),"
        " beside the main thread, which featurizes the next chunk meanwhile"
        " (docs/batch-scoring.md)")] = 1,
    max_chunks: Annotated[int | None, typer.Option(
        "--max-chunks", help="stop after writing this many chunks (resume later)")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume/--restart", help="continue after the checkpoint, or start over")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress line")] = False,
    spec: Annotated[Path | None, typer.Option(
        "--spec", help="pipeline spec (default: PRECOG_SPEC)")] = None,
) -> None:
    """Validate, featurize and score every event; predictions to --out, invalid events to
    <out>.rejects.jsonl with the dead-letter reason, progress in <out>.checkpoint.json."""
    from precog.batch_scoring import BatchRequest, TopicRange, run_batch
    from precog.replay.plan import parse_time

    if from_redis and from_snapshot is not None:
        raise ConfigError("give --from-redis or --from-snapshot, not both")
    if topic is None and any(v is not None for v in (start, end, start_offset, end_offset)):
        raise ConfigError("--start, --end, --start-offset and --end-offset need --topic")
    if challenger and leader is None:
        raise ConfigError("--challenger needs --leader")
    if index_namespace is not None and not index:
        raise ConfigError("--index-namespace needs --index")
    settings = get_settings()

    def when(text: str | None, option: str) -> int | None:
        try:
            return parse_time(text) if text else None
        except ConfigError as exc:
            raise ConfigError(f"{option}: {exc}") from None

    models = None
    if leader is not None:
        models = {"revision": 0, "leader": parse_ref(leader, "--leader"),
                  "challengers": [parse_ref(c, "--challenger") for c in challenger or []]}
    if index:
        from precog.replay.runner import namespace_settings

        index_namespace = namespace_settings(settings, index_namespace or settings.namespace,
                                             "--index-namespace").namespace
    start_ms, end_ms = when(start, "--start"), when(end, "--end")
    if start_ms is not None and end_ms is not None and start_ms > end_ms:
        raise ConfigError(f"--start {start} is after --end {end}: the range is empty")
    request = BatchRequest(
        settings=settings, spec=load_spec(spec or settings.spec), out=out, input=input,
        input_format=input_format,
        topic=None if topic is None else TopicRange(
            topic, start_ms=start_ms, end_ms=end_ms,
            start_offsets=start_offset, end_offsets=end_offset),
        out_format=out_format,
        state="redis" if from_redis else "snapshot" if from_snapshot else "input",
        snapshot=from_snapshot, state_out=state_out, models=models,
        index_namespace=index_namespace, chunk_size=chunk_size, resume=resume,
        model_threads=model_threads,
        max_chunks=max_chunks, progress=not quiet,
    )
    summary = run_batch(request)
    if summary.complete and summary.rows and not summary.predictions:
        raise ConfigError(f"all {summary.rows:,} rows of {request.input_name} were rejected"
                          f" (the first: {summary.first_reject or 'see the file'});"
                          f" rejects -> {summary.rejects_file}")
    if summary.complete and summary.rows_this_run == 0 and summary.resumed_at_chunk:
        typer.echo(f"{out}: complete already ({summary.chunks} chunks); --restart scores again")
    elif not summary.complete:
        typer.echo(f"stopped after chunk {summary.chunks} (--max-chunks); the same command"
                   " resumes")
    extra = []
    if summary.resumed_at_chunk and summary.rows_this_run:
        extra.append(f"resumed at chunk {summary.resumed_at_chunk}")
    if summary.indexed_documents:
        extra.append(f"{summary.indexed_documents:,} documents indexed into"
                     f" {index_namespace}-predictions")
    if summary.states_written is not None:
        extra.append(f"{summary.states_written:,} entity states -> {state_out}")
    typer.echo(f"{summary.models}; {summary.rows_this_run:,} rows in {summary.seconds:.1f}s"
               + "".join(f"; {e}" for e in extra))
    typer.echo(f"predictions -> {summary.out}; rejects -> {summary.rejects_file}")
    if summary.complete and not summary.rows:
        typer.echo(f"{request.input_name}: no rows to score (an empty input); the output holds"
                   " no predictions")
    else:
        typer.echo(summary.reconciliation())
