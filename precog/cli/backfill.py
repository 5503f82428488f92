"""``precog backfill``: load entity feature state from a history into the online store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from precog.settings import get_settings
from precog.spec import load_spec

app = typer.Typer(
    help="Fold a history's events into entity states in Redis (features continue from it).",
    invoke_without_command=True,
)


@app.callback()
def backfill(
    history: Annotated[
        Path, typer.Option("--history", help="directory with events.avro (precog simulate)")
    ],
    spec: Annotated[
        Path | None, typer.Option("--spec", help="pipeline spec (default: PRECOG_SPEC)")
    ] = None,
) -> None:
    """Write every entity's state after the history to ``{ns}:state:<spec>:<entity>``."""
    from pipelines.backfill import backfill as run

    settings = get_settings()
    pipeline = load_spec(spec or settings.spec)
    run(settings, pipeline, history, log=typer.echo)
