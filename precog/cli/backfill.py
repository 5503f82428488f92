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
        Path | None, typer.Option("--history", help="directory with events.avro (precog simulate)")
    ] = None,
    from_topic: Annotated[
        bool, typer.Option("--from-topic", help="rebuild from the retained events topic up to "
                           "the worker group's committed offsets (after Redis lost its state)")
    ] = False,
    spec: Annotated[
        Path | None, typer.Option("--spec", help="pipeline spec (default: PRECOG_SPEC)")
    ] = None,
) -> None:
    """Write every entity's state to ``{ns}:state:<spec>:<entity>``, from a history or the topic."""
    from precog.errors import ConfigError

    if (history is None) == (not from_topic):
        raise ConfigError("give exactly one of --history DIR and --from-topic")
    settings = get_settings()
    pipeline = load_spec(spec or settings.spec)
    if from_topic:
        from precog.pipelines.backfill import rebuild_from_topic

        rebuild_from_topic(settings, pipeline, log=typer.echo)
    else:
        from precog.pipelines.backfill import backfill as run

        assert history is not None
        run(settings, pipeline, history, log=typer.echo)
