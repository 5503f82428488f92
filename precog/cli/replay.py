"""``precog replay``: replay a namespace's topics into a production-parallel one, copy its
roles, and compare the two namespaces' predictions."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from precog.errors import ConfigError
from precog.replay.compare import CompareReport
from precog.replay.plan import parse_pace, parse_time
from precog.replay.request import DEFAULT_CHECKPOINT_DIR, ReplayRequest
from precog.settings import Settings, get_settings
from precog.spec import PipelineSpec, load_spec

app = typer.Typer(help="Replay historic topics into a production-parallel namespace; compare.",
                  no_args_is_help=True)

SpecOption = Annotated[
    Path | None, typer.Option("--spec", help="pipeline spec (default: PRECOG_SPEC)")
]
FromOption = Annotated[str, typer.Option("--from-namespace", help="namespace to read (e.g. prod)")]
ToOption = Annotated[str, typer.Option("--to-namespace", help="namespace to write (e.g. parallel)")]
#: a range of a topic (also ``precog score-batch --topic``)
StartOption = Annotated[str | None, typer.Option(
    "--start", help="first record time (ISO 8601 or epoch ms), via offsets-for-times")]
EndOption = Annotated[str | None, typer.Option("--end", help="records before this time")]
StartOffsetOption = Annotated[str | None, typer.Option(
    "--start-offset", help="N for every partition, or P:N,P:N")]
EndOffsetOption = Annotated[str | None, typer.Option(
    "--end-offset", help="exclusive end offsets: N or P:N,P:N")]


def _context(spec: Path | None) -> tuple[Settings, PipelineSpec]:
    settings = get_settings()
    return settings, load_spec(spec or settings.spec)


def _ns(settings: Settings, namespace: str, option: str) -> Settings:
    from precog.replay.runner import namespace_settings

    return namespace_settings(settings, namespace, option)


@app.command("run")
def run(
    from_namespace: FromOption,
    to_namespace: ToOption,
    topic: Annotated[str | None, typer.Option(
        "--topic", help="topic without namespace (default: the spec's event.topic)")
    ] = None,
    start: StartOption = None,
    end: EndOption = None,
    start_offset: StartOffsetOption = None,
    end_offset: EndOffsetOption = None,
    pace: Annotated[str, typer.Option(
        "--pace", help="max | realtime | Nx (by record timestamp; may change on resume)")
    ] = "max",
    warmup_start: Annotated[str | None, typer.Option(
        "--warmup-start", help="rebuild feature state from here up to the start, unscored")
    ] = None,
    with_outcomes: Annotated[bool, typer.Option(
        "--with-outcomes", help="replay the outcomes of the same time range, merged by time")
    ] = False,
    resume: Annotated[bool, typer.Option(
        "--resume/--restart", help="continue after the checkpoint, or start over")] = True,
    checkpoint_dir: Annotated[Path, typer.Option(
        "--checkpoint-dir", help="checkpoints live in <dir>/<to-ns>/<topic>.json")
    ] = DEFAULT_CHECKPOINT_DIR,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress line")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="allow replaying into namespace prod")] = False,
    spec: SpecOption = None,
) -> None:
    """Republish a range of FROM.<topic> into TO.<topic>: keys, headers, record times and
    partitions kept, paced by record time; resumable without duplicates (run the same
    command again; the pace may change)."""
    from precog.replay.runner import replay

    settings, pipeline = _context(spec)
    request = ReplayRequest(
        _ns(settings, from_namespace, "--from-namespace"),
        _ns(settings, to_namespace, "--to-namespace"), pipeline,
        topic=topic,
        start_ms=parse_time(start) if start else None,
        end_ms=parse_time(end) if end else None,
        start_offsets=start_offset, end_offsets=end_offset,
        pace=parse_pace(pace),
        warmup_start_ms=parse_time(warmup_start) if warmup_start else None,
        with_outcomes=with_outcomes, resume=resume, checkpoint_dir=checkpoint_dir,
        progress=not quiet, force=force,
    )
    summary = replay(request)
    if summary.empty:  # replay() said so
        return
    typer.echo(
        f"replayed {summary.sent:,} records {summary.source_topic} -> {summary.target_topic}"
        f" ({summary.planned:,} planned offsets; outcomes {summary.outcomes_sent:,};"
        f" skipped as already delivered {summary.skipped_delivered:,};"
        f" warm-up {summary.warmup_events:,} events / {summary.warmup_entities:,} entities)"
        f" in {summary.seconds:.1f}s; checkpoint {summary.checkpoint}"
    )


@app.command("copy-roles")
def copy_roles_cmd(
    from_namespace: FromOption, to_namespace: ToOption, spec: SpecOption = None,
    force: Annotated[bool, typer.Option(
        "--force", help="allow rewriting the roles of namespace prod")] = False,
) -> None:
    """Start the parallel namespace with production's leader and challengers (its own
    model-control; change it later with PRECOG_NAMESPACE=<to> precog models ...)."""
    from precog.replay.runner import copy_roles

    if to_namespace == "prod" and not force:
        raise ConfigError("refusing to rewrite the roles of namespace 'prod' without --force")
    settings, pipeline = _context(spec)
    roles = copy_roles(_ns(settings, from_namespace, "--from-namespace"),
                       _ns(settings, to_namespace, "--to-namespace"), pipeline,
                       by="precog replay copy-roles")
    ch = ", ".join(map(str, roles.challengers)) or "none"
    typer.echo(f"{to_namespace}: {pipeline.name} roles revision {roles.revision}: leader "
               f"{roles.leader}; challengers {ch} (from {from_namespace})")


@app.command("compare")
def compare_cmd(
    left: Annotated[str, typer.Option("--left", help="namespace, e.g. prod")],
    right: Annotated[str, typer.Option("--right", help="namespace, e.g. parallel")],
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON")] = False,
    index: Annotated[bool, typer.Option(
        "--index", help="write documents to Elasticsearch <right>-replay-compare")] = False,
    top: Annotated[int, typer.Option("--top", min=0, help="largest disagreements to list")
                   ] = 10,
    spec: SpecOption = None,
) -> None:
    """Join LEFT's and RIGHT's predictions by event id: score differences per model,
    leader agreement, metrics against outcomes, largest disagreements."""
    from precog.replay.runner import compare_namespaces

    settings, pipeline = _context(spec)
    if left == right:
        raise ConfigError("--left and --right must differ")
    rs = _ns(settings, right, "--right")
    report = compare_namespaces(_ns(settings, left, "--left"), rs, pipeline, top=top,
                                index_into=rs if index else None,
                                now_ms=int(time.time() * 1000))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=1, sort_keys=True))
    else:
        typer.echo(format_report(report))
    if index:
        typer.echo(f"indexed into {rs.index('replay-compare')}", err=True)


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def format_report(r: CompareReport) -> str:
    """The terminal form of a comparison."""
    from precog.cli.train import format_table

    lines = [
        f"{r.left_namespace} (left) vs {r.right_namespace} (right)",
        f"events: left {r.events_left:,}, right {r.events_right:,}, both {r.events_both:,};"
        f" only left {r.only_left:,}, only right {r.only_right:,};"
        f" duplicates {r.duplicates_left}/{r.duplicates_right};"
        f" dead letters {r.dead_letters_left}/{r.dead_letters_right}",
        f"leader decision agreement: {_f(r.leader_agreement)}"
        f" ({r.leader_agreements:,}/{r.events_both:,})",
        f"code versions: left {', '.join(r.code_versions_left) or '-'};"
        f" right {', '.join(r.code_versions_right) or '-'}",
        "",
        "score differences (right - left) per model on events both scored:",
        format_table(("model", "ver", "events", "equal", "max |diff|", "mean |diff|",
                      "label agree"),
                     [(m.model_id, str(m.version), str(m.count), str(m.equal),
                       f"{m.max_abs_diff:.3g}", f"{m.mean_abs_diff:.3g}",
                       _f(m.label_agreement)) for m in r.models]) if r.models else "  none",
        "",
        "metrics where outcomes exist ((leader) = the leader decision):",
        format_table(("side", "model", "ver", "role", "labels", "accuracy", "precision",
                      "recall", "f1", "roc_auc"),
                     [(m.side, m.model_id, str(m.version), m.role, str(m.n_labels),
                       _f(m.accuracy), _f(m.precision), _f(m.recall), _f(m.f1),
                       _f(m.roc_auc)) for m in r.metrics]) if r.metrics else "  no outcomes",
        "",
        "largest disagreements (leader vs leader):",
    ]
    if not r.disagreements:
        lines.append("  none")
    for d in r.disagreements:
        diffs = ", ".join(f"{k} {v:+.4g}" for k, v in d.feature_diffs.items()) or "none"
        lines.append(
            f"  {d.event_id} {d.entity_id}: {d.left_model_id} v{d.left_version} "
            f"{d.left_score:.4f} ({d.left_label}) vs {d.right_model_id} v{d.right_version} "
            f"{d.right_score:.4f} ({d.right_label}); outcome "
            f"{'-' if d.outcome_label is None else d.outcome_label}; feature diffs: {diffs}")
        lines.append("    features: " + ", ".join(f"{k}={v:.4g}" for k, v in d.features.items()))
    return "\n".join(lines)
