"""``precog retrain``: new model versions from the deployment's own topics, as challengers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from precog.settings import Settings
from precog.spec import load_spec

app = typer.Typer(
    help="Retrain the spec's models on the events and outcomes of the namespace's topics and "
    "add the new versions as challengers (docs/lifecycle.md).",
    no_args_is_help=True,
)
SpecOption = Annotated[Path | None, typer.Option("--spec", help="pipeline spec (default:"
                                                  " PRECOG_SPEC)")]


def window_ms(since: str, until: str | None, now_ms: int) -> tuple[int, int]:
    """``[start, end)`` from ``--since`` (a duration back from ``--until``, or a time) and
    ``--until`` (a time; default now).

    >>> window_ms("1d", None, 86_400_000 * 3)
    (172800000, 259200000)
    >>> window_ms("2026-01-01", "2026-01-02", 0)
    (1767225600000, 1767312000000)
    >>> window_ms("1000", "5000", 0)
    (1000, 5000)
    >>> window_ms("99999999d", None, 86_400_000)
    Traceback (most recent call last):
    precog.errors.ConfigError: bad --since '99999999d': the window would start before 1970-01-01
    """
    from precog.errors import ConfigError
    from precog.spec import epoch_ms, parse_duration

    def when(text: str) -> int:
        return int(text) if text.strip().isdigit() else epoch_ms(text)

    end = now_ms if until is None else when(until)
    if end < 0:
        raise ConfigError(f"bad --until {until!r}: before 1970-01-01")
    try:
        start = end - parse_duration(since)
    except ConfigError:
        try:
            start = when(since)
        except ConfigError:
            raise ConfigError(f"bad --since {since!r}: a duration back from --until (7d, 36h)"
                              " or a time (ISO date or epoch ms)") from None
    if start < 0:  # Kafka has no offsets before the epoch
        raise ConfigError(f"bad --since {since!r}: the window would start before 1970-01-01")
    return start, end


def _show(rec: dict) -> None:
    typer.echo(f"retrain {rec['decision_id']}: {rec['action']}: {rec['reason']}")
    for c in rec.get("candidates", []):
        typer.echo(f"  {c['model_id']} v{c['version']}: {c['reason']}")


@app.command("run")
def retrain(
    since: Annotated[str, typer.Option("--since", help="window start: a duration back from"
                                       " --until (e.g. 7d) or a time")] = "7d",
    until: Annotated[str | None, typer.Option("--until", help="window end (default now)")
                     ] = None,
    spec: SpecOption = None,
    max_challengers: Annotated[int, typer.Option("--max-challengers", min=1,
                                                 help="no run when it would exceed this")
                               ] = 3,
    holdout_fraction: Annotated[float, typer.Option("--holdout-fraction", min=0.05, max=0.5)
                                ] = 0.2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    trigger: Annotated[str, typer.Option("--trigger", help="recorded in the audit")
                       ] = "manual",
    recent: Annotated[str, typer.Option("--recent", help="also evaluate the new versions on"
                                        " the leader's labels joined in this span before"
                                        " --until")] = "1d",
) -> None:
    """Train on the window's labelled events, register, add as challengers, audit."""
    from precog.pipelines.retrain import retrain as run
    from precog.spec import parse_duration

    settings = Settings()
    pipeline = load_spec(spec or settings.spec)
    start, end = window_ms(since, until, int(time.time() * 1000))
    rec = run(settings, pipeline, start, end, trigger=trigger, seed=seed,
              holdout_fraction=holdout_fraction, max_challengers=max_challengers,
              recent_ms=parse_duration(recent), log=typer.echo)
    _show(rec)


@app.command("check")
def check_cmd(spec: SpecOption = None) -> None:
    """Check the spec's retraining triggers once; retrain when one fired (for cron)."""
    from precog.pipelines.retrain_triggers import check

    settings = Settings()
    rec = check(settings, load_spec(spec or settings.spec), log=typer.echo)
    if rec is not None:
        _show(rec)


@app.command("watch")
def watch_cmd(
    spec: SpecOption = None,
    every: Annotated[float, typer.Option("--every", min=1.0, help="seconds between checks")
                     ] = 300.0,
) -> None:
    """Check the triggers every ``--every`` seconds until interrupted (its own process)."""
    from precog.errors import ServiceUnavailable
    from precog.pipelines.retrain_triggers import check

    settings = Settings()
    pipeline = load_spec(spec or settings.spec)
    while True:
        try:
            rec = check(settings, pipeline, log=typer.echo)
            if rec is not None:
                _show(rec)
        except ServiceUnavailable as exc:  # wait it out, like the worker
            typer.echo(f"precog: warning: {exc}; checking again in {every:.0f} s", err=True)
        time.sleep(every)
