"""``precog setup``: create a namespace's topics and apply its Elasticsearch index templates."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from precog.settings import Settings, settings_with

if TYPE_CHECKING:
    from precog.spec import PipelineSpec

app = typer.Typer(help="Create the namespace's Kafka topics, Elasticsearch index templates "
                  "and indices.", invoke_without_command=True)


@app.callback()
def setup(
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="default: PRECOG_NAMESPACE")
    ] = None,
    spec: Annotated[
        Path | None, typer.Option("--spec", help="pipeline spec (default: PRECOG_SPEC)")
    ] = None,
    templates: Annotated[
        Path | None, typer.Option("--templates", help="default: kibana/templates")
    ] = None,
) -> None:
    """Idempotent: existing topics, templates and indices are reported, never recreated or
    lost."""
    from precog.errors import ConfigError
    from precog.namespace import TEMPLATE_DIR, setup_namespace, template_dir_problem
    from precog.spec import load_spec

    settings = settings_with(namespace=("--namespace", namespace), spec=("--spec", spec))
    problem = template_dir_problem(templates) if templates is not None else None
    if problem:
        raise ConfigError(f"bad --templates {str(templates)!r}: {problem}")
    spec_path = spec or settings.spec
    pipeline = load_spec(spec_path)  # the relative default falls back to the packaged specs
    typer.echo(f"namespace {settings.namespace}: spec {spec_path}")
    setup_namespace(settings, pipeline, echo=typer.echo, template_dir=templates or TEMPLATE_DIR)
    _register_schemas(settings, pipeline)
    typer.echo(f"namespace {settings.namespace}: ready")


def _register_schemas(settings: Settings, pipeline: PipelineSpec) -> None:
    """Schema Registry mode (docs/schemas.md): every topic's subject, compatibility BACKWARD."""
    if settings.wire_format != "confluent":
        return
    from precog.schema_registry import register_schemas

    typer.echo(f"namespace {settings.namespace}: Confluent wire format, schema registry"
               f" {settings.schema_registry.url}")
    register_schemas(settings, pipeline, echo=typer.echo)
