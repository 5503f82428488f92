"""``precog train``: train the spec's models on a history (docs/features.md) and register them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from precog.errors import ConfigError
from precog.registry import ModelMetadata
from precog.settings import Settings

app = typer.Typer(
    help="Train and register the pipeline spec's models from a history directory.",
    invoke_without_command=True,
)


@app.callback()
def train(
    history: Annotated[
        Path, typer.Option("--history", help="directory with events.avro and outcomes.avro")
    ],
    spec: Annotated[
        Path | None, typer.Option("--spec", help="pipeline spec (default: PRECOG_SPEC)")
    ] = None,
    holdout_fraction: Annotated[
        float, typer.Option("--holdout-fraction", help="last share of event time held out")
    ] = 0.2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    index: Annotated[
        bool, typer.Option("--index/--no-index", help="index metadata into {ns}-models")
    ] = True,
    roles: Annotated[
        bool,
        typer.Option("--roles/--no-roles", help="publish initial roles when the spec has none"),
    ] = True,
) -> None:
    """Train every model of the spec, register it, index it, publish initial roles."""
    from precog.history import history_dir
    from precog.pipelines.train import train as run_training
    from precog.spec import load_spec

    settings = Settings()
    if not 0 < holdout_fraction < 1:
        raise ConfigError(f"--holdout-fraction must be between 0 and 1, got {holdout_fraction}")
    history_dir(history)  # a history that is not there, before any service is asked
    pipeline = load_spec(spec or settings.spec)
    typer.echo(f"training {pipeline.name} from {history} (namespace {settings.namespace})")
    metas = run_training(
        settings, pipeline, history, holdout_fraction, seed,
        index=index, roles=roles, log=typer.echo,
    )
    typer.echo(metrics_table(metas))
    typer.echo(f"registry: {settings.registry_dir.resolve()}")
    if index:
        typer.echo(f"indexed: {settings.index('models')}")


def metrics_table(metas: list[ModelMetadata]) -> str:
    """A fixed-width table of models with their holdout metrics and threshold."""
    head = ("model", "ver", "algorithm", "train", "holdout", "auc", "logloss",
            "prec", "recall", "f1", "threshold")
    rows = [
        (
            m.model_id, str(m.version), m.algorithm, str(m.training_rows), str(m.holdout_rows),
            f"{m.holdout.roc_auc:.4f}", f"{m.holdout.log_loss:.4f}",
            f"{m.holdout.precision:.3f}", f"{m.holdout.recall:.3f}", f"{m.holdout.f1:.3f}",
            f"{m.threshold:.4f}",
        )
        for m in metas
    ]
    return format_table(head, rows)


def format_table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> str:
    """Left-aligned columns separated by two spaces.

    >>> print(format_table(("a", "bb"), [("xyz", "1")]))
    a    bb
    xyz  1
    """
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
             for r in (head, *rows)]
    return "\n".join(lines)
