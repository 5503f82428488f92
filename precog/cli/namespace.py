"""``precog namespace``: list every namespace found in the stores, drop one exactly."""

from __future__ import annotations

from typing import Annotated

import typer

from precog.settings import settings_with

app = typer.Typer(help="Namespaces: list what each has, drop one (topics, indices, keys, "
                  "groups).", no_args_is_help=True)


@app.command("list")
def list_cmd() -> None:
    """Every namespace found in Kafka topics and groups, Elasticsearch indices and
    templates, and Redis keys, with what it has."""
    from precog.teardown import find

    found = find(settings_with())
    if not found:
        typer.echo("no namespaces")
        return
    header = ("namespace", "topics", "records", "indices", "documents", "templates",
              "groups", "redis keys")
    rows = [(r.namespace, len(r.topics), sum(r.topics.values()), len(r.indices),
             sum(r.indices.values()), len(r.templates), len(r.groups), r.redis_keys)
            for r in found.values()]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        typer.echo("  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w)
                             for i, (x, w) in enumerate(zip(row, widths, strict=True))))


@app.command("drop")
def drop_cmd(
    namespace: Annotated[str, typer.Argument(help="the namespace to remove")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")
                   ] = False,
    force: Annotated[bool, typer.Option("--force", help="allow dropping prod")] = False,
) -> None:
    """Remove exactly NAMESPACE's Kafka topics, consumer groups, Elasticsearch indices and
    index templates, and Redis keys. Model artifacts (PRECOG_REGISTRY_DIR) are shared by
    every namespace and stay; the namespace's model index and roles go with it."""
    from precog.teardown import check_droppable, drop, find

    check_droppable(namespace, force=force, given_as="NAMESPACE argument")
    settings = settings_with()
    plan = find(settings, only=namespace).get(namespace)
    if plan is None or plan.empty:
        typer.echo(f"namespace {namespace}: nothing to drop")
        return
    typer.echo(f"will remove {plan.summary()}")
    if not yes and not typer.confirm(f"drop namespace {namespace}?", default=False):
        typer.echo("nothing removed")
        raise typer.Exit(1)
    done = drop(settings, namespace, force=force, plan=plan)
    typer.echo(f"namespace {namespace}: removed")
    for line in done.lines():
        typer.echo(f"  {line}")
    if done.failed:
        raise typer.Exit(1)
