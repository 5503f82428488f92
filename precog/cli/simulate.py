"""``precog simulate``: write a seeded history for training, or produce a live stream to Kafka."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from precog.errors import ConfigError
from precog.settings import get_settings
from precog.spec import PipelineSpec, load_spec

app = typer.Typer(help="Seeded event simulator: history files or a live Kafka stream.",
                  no_args_is_help=True)


SpecOption = Annotated[
    Path | None, typer.Option("--spec", help="pipeline spec (default: settings.spec)")
]
# the spec names the simulator (simulation.simulator); these words fit every domain
EntitiesOption = Annotated[int | None, typer.Option(
    "--entities", min=1,
    help="entities in the simulated world (values of the spec's event.entity_field), at most"
         " 1,000,000; default: the simulator's")]
# no typer range: SimConfig refuses a rate outside (0, 0.5) in one line
PositiveRateOption = Annotated[float, typer.Option(
    "--positive-rate", help="share of events labelled 1, in (0, 0.5)")]


def _spec(path: Path | None) -> PipelineSpec:
    return load_spec(path or get_settings().spec)


def _epoch_ms(text: str | None) -> int | None:
    """``--end``: epoch milliseconds or an ISO 8601 time (UTC unless it says otherwise)."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--end {text!r}: use epoch milliseconds or ISO 8601") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@app.command()
def history(
    out: Annotated[Path, typer.Option("--out", help="directory for events.avro, outcomes.avro")],
    events: Annotated[int, typer.Option(
        "--events", min=1, help="number of events, at most 10,000,000")] = 20_000,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    end: Annotated[str | None, typer.Option(
        "--end", help="last event time, 1970-01-01 to 9999-12-31 (default now)")] = None,
    days: Annotated[float | None, typer.Option(
        "--days", help="span in days, 0.01 to 3650 (default: the spec's"
                       " simulation.history_days)")] = None,
    spec: SpecOption = None,
    entities: EntitiesOption = None,
    positive_rate: PositiveRateOption = 0.02,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
    force: Annotated[bool, typer.Option(
        "--force", help="replace the history already in --out")] = False,
) -> None:
    """Write a history (no garbage) for training: events, known outcomes, manifest.json."""
    from precog.history import check_out
    from precog.simulate import SimConfig, write_history

    check_out(out, force)
    cfg = SimConfig(seed=seed, entities=entities, positive_rate=positive_rate)
    s = write_history(out, events, seed, _epoch_ms(end), progress, config=cfg, days=days,
                      spec=_spec(spec))
    typer.echo(
        f"wrote {s.events:,} events ({s.positives:,} positive, rate {s.positive_rate:.4f}) and"
        f" {s.outcomes:,} outcomes ({s.outcomes_pending:,} not yet known) to {s.out_dir}"
        f" in {s.seconds:.1f}s; events {s.first_event_time}..{s.last_event_time}"
    )


@app.command()
def live(
    events: Annotated[int, typer.Option("--events", min=1)] = 1000,
    rate: Annotated[float, typer.Option("--rate", min=0.001, help="events per second")] = 100.0,
    seed: Annotated[int, typer.Option("--seed")] = 11,
    spec: SpecOption = None,
    entities: EntitiesOption = None,
    positive_rate: PositiveRateOption = 0.02,
    garbage: Annotated[float, typer.Option("--garbage", help="fraction of garbage records")] = 0.0,
    concept_drift_at: Annotated[int | None, typer.Option("--concept-drift-at", min=0)] = None,
    data_drift_at: Annotated[int | None, typer.Option("--data-drift-at", min=0)] = None,
    data_drift_feature: Annotated[str | None, typer.Option(
        "--data-drift-feature", help="default: the spec's simulation.data_drift_feature")] = None,
    volume_drop_at: Annotated[int | None, typer.Option("--volume-drop-at", min=0)] = None,
    volume_drop_len: Annotated[int, typer.Option("--volume-drop-len", min=0)] = 0,
    volume_drop: Annotated[float, typer.Option("--volume-drop", help="fraction dropped")] = 0.3,
    outcome_delay_scale: Annotated[float, typer.Option(
        "--outcome-delay-scale", min=0.0,
        help="wall time per simulated outcome delay (1/8640: a day becomes 10 s)")] = 1 / 8640,
    outcome_wait: Annotated[float | None, typer.Option(
        "--outcome-wait", min=0.0, help="max seconds to wait for outcomes at the end")] = None,
    time_scale: Annotated[float, typer.Option(
        "--time-scale", min=1.0,
        help="event time runs this many times faster than the wall clock, ending now"
             " (e.g. 1800: a second is half an hour; use --outcome-delay-scale 1)")] = 1.0,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Produce a live stream (event time = now) with outcomes and manifests to Kafka."""
    from precog.simulate import SimConfig, produce_live

    settings = get_settings()
    pipeline = _spec(spec)
    cfg = SimConfig(
        seed=seed, entities=entities, positive_rate=positive_rate,
        garbage_fraction=garbage, concept_drift_at=concept_drift_at,
        data_drift_at=data_drift_at, data_drift_feature=data_drift_feature,
        volume_drop_at=volume_drop_at, volume_drop_len=volume_drop_len, volume_drop=volume_drop,
    )
    s = produce_live(settings, pipeline, events, rate, cfg, progress,
                     outcome_delay_scale=outcome_delay_scale, outcome_wait_s=outcome_wait,
                     time_scale=time_scale)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(s.garbage.items())) or "none"
    typer.echo(
        f"sent {s.sent:,} records to {s.topic} in {s.seconds:.1f}s: {s.valid:,} valid,"
        f" garbage {kinds}, dropped {s.dropped:,}; outcomes sent {s.outcomes_sent:,}"
        f" (pending {s.outcomes_pending:,}); manifests {s.manifests_sent:,}"
        f" announcing {s.manifest_records:,} records"
    )
