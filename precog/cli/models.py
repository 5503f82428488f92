"""``precog models``: list and inspect registered models, change leader and challengers.

Every role change checks that the version is in the registry, was trained for this
spec on features the spec has, and loads with a matching sha256, before publishing.
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from precog.cli.train import format_table
from precog.errors import ConfigError, PrecogError, ServiceUnavailable
from precog.registry import ModelMetadata, ModelRegistry
from precog.roles import (
    ModelRef,
    Roles,
    add_challenger,
    canary,
    initial_roles,
    remove_challenger,
    rollback,
    set_leader,
    set_traffic,
)
from precog.settings import Settings
from precog.spec import PipelineSpec, load_spec
from precog.traffic import percent_to_weight

app = typer.Typer(help="Registered models and their leader/challenger roles.",
                  no_args_is_help=True)

SpecOption = Annotated[
    Path | None, typer.Option("--spec", help="pipeline spec (default: PRECOG_SPEC)")
]
ReasonOption = Annotated[str, typer.Option("--reason", help="why; kept in the roles record")]


def _context(spec: Path | None) -> tuple[Settings, PipelineSpec, ModelRegistry]:
    settings = Settings()
    return settings, load_spec(spec or settings.spec), ModelRegistry(settings.registry_dir)


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return "precog-cli"


def _roles_line(roles: Roles) -> str:
    ch = ", ".join(map(str, roles.challengers)) or "none"
    prev = ", ".join(map(str, roles.previous_leaders)) or "none"
    t = roles.traffic
    split = "shadow" if t is None else f"{t.policy} " + ", ".join(
        f"{a.name} {a.model} {a.weight / 100:g}%" for a in t.arms)
    return (f"{roles.spec} roles revision {roles.revision}: leader {roles.leader};"
            f" challengers {ch}; previous leaders {prev}; traffic {split}")


# --------------------------------------------------------------------------- read


@app.command("list")
def list_models(spec: SpecOption = None) -> None:
    """Every registered version with holdout metrics and its current role."""
    from precog.services.model_control import read_roles

    settings, pipeline, registry = _context(spec)
    metas = registry.list()
    try:
        roles = read_roles(settings, pipeline.name)
    except ServiceUnavailable:  # roles that exist but cannot be read: never shown as none
        raise
    except PrecogError as exc:  # e.g. no model-control topic: list the registry without roles
        typer.echo(f"precog: warning: roles unknown: {exc}", err=True)
        roles = None
    if not metas:
        typer.echo(f"no models in the registry {settings.registry_dir}")
        return
    head = ("model", "ver", "role", "algorithm", "spec", "created", "train", "auc",
            "f1", "threshold", "sha256")
    rows = []
    for m in metas:
        role = roles.role_of(ModelRef(m.model_id, m.version)) if roles else None
        rows.append((
            m.model_id, str(m.version), role or "-", m.algorithm, m.spec,
            _iso(m.created_time), str(m.training_rows), f"{m.holdout.roc_auc:.4f}",
            f"{m.holdout.f1:.3f}", f"{m.threshold:.4f}", m.artifact_sha256[:12],
        ))
    typer.echo(format_table(head, rows))
    typer.echo(_roles_line(roles) if roles else f"{pipeline.name}: no roles published")


@app.command("show")
def show(
    model_id: Annotated[str, typer.Argument(help="model id, e.g. fraud-lgbm")],
    version: Annotated[int | None, typer.Option("--version", "-v", help="default: latest")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the full metadata.json")] = False,
) -> None:
    """One version's metadata: training window, holdout, threshold, sha256, code version."""
    registry = ModelRegistry(Settings().registry_dir)
    meta = registry.latest(model_id) if version is None else registry.get(model_id, version)
    if as_json:
        typer.echo(meta.model_dump_json(indent=2))
        return
    typer.echo(describe(meta, registry))


def describe(meta: ModelMetadata, registry: ModelRegistry) -> str:
    """Human-readable summary of one version."""
    h = meta.holdout
    lines = [
        f"{meta.ref}  ({meta.algorithm}, spec {meta.spec})",
        f"artifact        {registry.artifact_file(meta)} [{meta.artifact_format}]",
        f"sha256          {meta.artifact_sha256}",
        f"features        {', '.join(meta.features)}",
        f"training window {_iso(meta.training_window_start)} .. {_iso(meta.training_window_end)}"
        f"  ({meta.training_rows} rows, {meta.training_positives} positive)",
        f"training data   sha256 {meta.training_data_sha256}",
        f"training source {meta.training_source or '-'}",
        f"holdout         {_iso(meta.holdout_start)} .. {_iso(meta.holdout_end)}"
        f"  ({meta.holdout_rows} rows)",
        f"holdout metrics precision {h.precision:.4f}  recall {h.recall:.4f}  f1 {h.f1:.4f}"
        f"  roc_auc {h.roc_auc:.4f}  log_loss {h.log_loss:.4f}  flagged {h.positive_rate:.4f}"
        f"  labels {h.label_rate:.4f}",
        f"threshold       {meta.threshold:.6f} ({meta.threshold_policy})",
        f"params          {json.dumps(meta.params, sort_keys=True)}  seed {meta.seed}",
        f"code version    {meta.code_version}",
        f"created         {_iso(meta.created_time)}",
    ]
    return "\n".join(lines)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


@app.command("reindex")
def reindex() -> None:
    """Write every registered version's document into ``{ns}-models`` again (idempotent)."""
    from precog.pipelines.train import index_all, reachable_elasticsearch

    settings = Settings()
    metas = ModelRegistry(settings.registry_dir).list()
    index_all(reachable_elasticsearch(settings), settings, metas)
    typer.echo(f"indexed {len(metas)} model versions into {settings.index('models')}")


# --------------------------------------------------------------------------- change


def verify_ref(registry: ModelRegistry, pipeline: PipelineSpec, ref: ModelRef) -> ModelMetadata:
    """The version exists, belongs to the spec, uses its features and loads (sha256)."""
    return registry.verify_for(pipeline, ref.model_id, ref.version)


def _change(spec: Path | None, change: str, ref: ModelRef | None, reason: str) -> None:
    from precog.services.model_control import publish_roles, read_roles

    settings, pipeline, registry = _context(spec)
    if ref is not None:
        if change == "remove-challenger":
            registry.get(ref.model_id, ref.version)  # removing a broken version is allowed
        else:
            registry.check_for(pipeline, ref.model_id, ref.version)  # no loading yet
    current = read_roles(settings, pipeline.name)
    at, by = int(time.time() * 1000), _who()
    # the change first (a version already in that role is refused at once), then loading
    # the version it brings in, which compiles a LightGBM model (seconds)
    if current is None:
        if change != "set-leader" or ref is None:
            raise ConfigError(f"{pipeline.name} has no roles yet: set a leader first")
        new = initial_roles(pipeline.name, ref, at=at, by=by, reason=reason or "first leader")
    elif change == "rollback":
        new = rollback(current, at=at, by=by, reason=reason)
    else:
        step = {"set-leader": set_leader, "add-challenger": add_challenger,
                "remove-challenger": remove_challenger}[change]
        assert ref is not None
        new = step(current, ref, at=at, by=by, reason=reason)
    if change == "rollback":
        verify_ref(registry, pipeline, new.leader)
    elif ref is not None and change != "remove-challenger":
        verify_ref(registry, pipeline, ref)
    publish_roles(settings, new)
    typer.echo(_roles_line(new))


@app.command("set-leader")
def set_leader_cmd(
    model_id: str, version: int, spec: SpecOption = None, reason: ReasonOption = ""
) -> None:
    """Make MODEL VERSION the leader; the current leader can be restored with rollback."""
    _change(spec, "set-leader", ModelRef(model_id, version), reason)


@app.command("add-challenger")
def add_challenger_cmd(
    model_id: str, version: int, spec: SpecOption = None, reason: ReasonOption = ""
) -> None:
    """Score MODEL VERSION alongside the leader."""
    _change(spec, "add-challenger", ModelRef(model_id, version), reason)


@app.command("remove-challenger")
def remove_challenger_cmd(
    model_id: str, version: int, spec: SpecOption = None, reason: ReasonOption = ""
) -> None:
    """Stop scoring MODEL VERSION as a challenger."""
    _change(spec, "remove-challenger", ModelRef(model_id, version), reason)


@app.command("rollback")
def rollback_cmd(spec: SpecOption = None, reason: ReasonOption = "") -> None:
    """Restore the previous leader; the current leader leaves every role."""
    _change(spec, "rollback", None, reason)


# --------------------------------------------------------------------------- lifecycle


def _decision_lines(rec: dict) -> list[str]:
    chosen = rec.get("chosen")
    head = (f"{_iso(int(rec['evaluated_time']))}  {rec['action']:<7}  leader "
            f"{rec['leader']['model_id']} v{rec['leader']['version']}"
            + (f" -> {chosen['model_id']} v{chosen['version']}" if chosen else "")
            + f"  [{rec['policy']}, {rec['metric']}, {rec['test']}, margin {rec['margin']},"
            f" window {_iso(int(rec['window_start']))} .. {_iso(int(rec['window_end']))}]")
    lines = [head, f"    {rec['reason']}"]
    ev = rec.get("traffic")
    if ev:
        lines.append(f"    traffic: {ev['arm']} {ev['from_percent']:g}% -> {ev['to_percent']:g}%,"
                     f" {ev['arm_labels']} arm labels since {_iso(int(ev['since']))}")
    for c in rec.get("candidates", []):
        lines.append(f"    {c['model_id']} v{c['version']}: {c['status']}"
                     + (f" (n={c['n']}, gain {c['gain']:+.4f}, p={c['p_value']:.4f})"
                        if c.get("n") else ""))
    return lines


@app.command("evaluate")
def evaluate_cmd(
    spec: SpecOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run",
                                          help="decide and show; record and change nothing")
                       ] = False,
) -> None:
    """Evaluate the spec's promotion policy once: record the decision and apply it.

    One decision per evaluation interval: running it again in the same interval applies the
    recorded decision (if it was not applied yet) and never decides twice.
    """
    from precog.services.lifecycle import evaluate

    settings, pipeline, _ = _context(spec)
    out = evaluate(settings, pipeline, apply=not dry_run, echo=typer.echo)
    _show_outcome(out)


@app.command("decisions")
def decisions_cmd(
    spec: SpecOption = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="newest first")] = 20,
) -> None:
    """The promotion policy's recent decisions with their evidence ({ns}-decisions)."""
    from precog.services.lifecycle import recent_decisions

    settings, pipeline, _ = _context(spec)
    found = recent_decisions(settings, pipeline.name, limit)
    if not found:
        typer.echo(f"no decisions for {pipeline.name} in {settings.index('decisions')}")
        return
    for rec in found:
        for line in _decision_lines(rec):
            typer.echo(line)


# --------------------------------------------------------------------------- traffic


@app.command("traffic")
def traffic_cmd(
    spec: SpecOption = None,
    canary_model: Annotated[str | None, typer.Option(
        "--canary", help="MODEL:VERSION, a challenger: serve its decisions to --percent")] = None,
    percent: Annotated[float | None, typer.Option(
        "--percent", min=0.01, max=99.99, help="the canary's share of the entities")] = None,
    shadow: Annotated[bool, typer.Option("--shadow", help="end the split: the leader decides")
                      ] = False,
    reason: ReasonOption = "",
) -> None:
    """Show the traffic split, or change it now (a new roles revision every worker reloads).

    The spec's traffic policy moves a canary on from there (`precog models evaluate-traffic`).
    """
    from precog.services.model_control import publish_roles, read_roles

    if shadow and (canary_model is not None or percent is not None):
        raise ConfigError("--shadow ends the split: it cannot go with --canary or --percent")
    if percent is not None and canary_model is None:
        raise ConfigError("--percent needs --canary MODEL:VERSION (the model it is the share"
                          " of)")
    settings, pipeline, registry = _context(spec)
    current = read_roles(settings, pipeline.name)
    if current is None:
        raise ConfigError(f"{pipeline.name} has no roles yet: set a leader first")
    if canary_model is None and not shadow:
        typer.echo(_roles_line(current))
        return
    at = int(time.time() * 1000)
    if shadow:
        if current.traffic is None:  # nothing to change: no revision for workers to reload
            typer.echo(f"{pipeline.name}: traffic is already shadow; nothing published")
            typer.echo(_roles_line(current))
            return
        new = set_traffic(current, None, at=at, by=_who(), reason=reason)
    else:
        if percent is None:
            raise ConfigError("--canary needs --percent (the candidate's share of the entities)")
        model_id, _, version = (canary_model or "").rpartition(":")
        if not model_id or not version.isdigit():
            raise ConfigError(f"--canary {canary_model!r}: use MODEL:VERSION, e.g. fraud-logreg:2")
        ref = ModelRef(model_id, int(version))
        verify_ref(registry, pipeline, ref)
        new = set_traffic(current, canary(current.leader, ref, percent_to_weight(percent),
                                          since=at), at=at, by=_who(), reason=reason)
    publish_roles(settings, new)
    typer.echo(_roles_line(new))


@app.command("evaluate-traffic")
def evaluate_traffic_cmd(
    spec: SpecOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run",
                                          help="decide and show; record and change nothing")
                       ] = False,
) -> None:
    """Evaluate the spec's traffic policy once: start, step up, promote or roll back a canary.

    One decision per `traffic.interval`, recorded in {ns}-decisions and applied once.
    """
    from precog.services.lifecycle import evaluate_traffic

    settings, pipeline, _ = _context(spec)
    out = evaluate_traffic(settings, pipeline, apply=not dry_run, echo=typer.echo)
    _show_outcome(out)


def _show_outcome(out: Any) -> None:
    """An evaluation's decision lines, its note and the roles it applied (if any)."""
    for line in _decision_lines(out.decision):
        typer.echo(line)
    if out.note:
        typer.echo(out.note)
    if out.applied:
        typer.echo("applied: " + _roles_line(out.roles))
