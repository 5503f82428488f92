"""``precog report``: preview every dashboard panel without Kibana (PNG charts + one HTML page)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from precog.dashboards import TimeRange, dashboards, load_templates
from precog.errors import ConfigError, ServiceUnavailable
from precog.settings import settings_with
from precog.spec import load_spec, parse_duration

app = typer.Typer(help="Render the dashboards' panels from Elasticsearch as PNG + HTML.")


def parse_time(text: str | None, now_ms: int) -> int | None:
    """``--since``/``--until``: a duration back from now (``24h``, ``7d``), an ISO time
    (UTC when no offset is given) or epoch milliseconds.

    >>> parse_time("1h", 10_000_000), parse_time("1970-01-01T00:00:01", 0), parse_time(None, 0)
    (6400000, 1000, None)
    """
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        return now_ms - parse_duration(text)
    except (ConfigError, ValueError):
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"not a duration, ISO time or epoch ms: {text!r}") from None
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)


def check_range(time_range: TimeRange, since: str | None, until: str | None) -> None:
    """``--since`` must be before ``--until`` (the range is ``[since, until)``).

    >>> check_range((1000, 2000), "1000", "2000")
    >>> check_range((2000, 1000), "2030-01-01", "2020-01-01")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    precog.errors.ConfigError: --since 2030-01-01 is not before --until 2020-01-01: ...
    """
    start, end = time_range
    if start is not None and end is not None and start >= end:
        raise ConfigError(f"--since {since} is not before --until {until}: the time range "
                          "is empty")


def make_out_dir(out_dir: Path) -> None:
    """Create the ``--out`` directory (parents too); an existing file or a path that
    cannot be created is a one-line ConfigError naming it."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename not in (None, str(out_dir)) else ""
        raise ConfigError(f"--out {out_dir}: cannot create the directory: "
                          f"{exc.strerror or exc}{where}") from None


@app.callback(invoke_without_command=True)
def report(
    namespace: Annotated[str | None, typer.Option(help="namespace [PRECOG_NAMESPACE]")] = None,
    out: Annotated[Path | None, typer.Option(help="output dir [reports/<ns>-<time>/]")] = None,
    since: Annotated[str | None, typer.Option(help="start: 24h, 7d, ISO time or epoch ms")] = None,
    until: Annotated[str | None, typer.Option(help="end: ISO time or epoch ms")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="one line per panel")] = False,
) -> None:
    """Run every dashboard panel's aggregation and write PNG charts plus report.html."""
    from elasticsearch import TransportError

    from precog.io.elasticsearch import elasticsearch_client
    from precog.report import write_report

    settings = settings_with(namespace=("--namespace", namespace))
    now = datetime.now(UTC)
    now_ms = int(now.timestamp() * 1000)
    time_range: TimeRange = (parse_time(since, now_ms), parse_time(until, now_ms))
    check_range(time_range, since, until)
    out_dir = out or Path("reports") / f"{settings.namespace}-{now.strftime('%Y%m%d-%H%M%S')}"
    pipeline = load_spec(settings.spec)
    make_out_dir(out_dir)
    boards = dashboards(pipeline.feature_names, pipeline.business)
    echo = typer.echo if verbose else None
    try:
        with elasticsearch_client(settings) as es:  # type: ignore[arg-type]
            result = write_report(es, settings.namespace, boards, load_templates(),
                                  out_dir, time_range, echo=echo)
    except TransportError as exc:
        raise ServiceUnavailable("elasticsearch", settings.elasticsearch.url,
                                 type(exc).__name__) from None
    typer.echo(result.summary())
    typer.echo(str(result.html))
