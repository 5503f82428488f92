"""The full pipeline demo: history -> training -> a live worker -> reconciliation, metrics, report.

(About 400 lines: one script read top to bottom, each step a function in the order it runs.)

Runs in its own namespace (``demo`` unless told otherwise), which it resets first, so it
gives the same result every time and never touches ``prod``. The model registry, the
history and the worker's log live under ``.precog/demo/<ns>/``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from precog.settings import Settings
from precog.spec import PipelineSpec, PromotionSpec, load_spec


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


@dataclass(frozen=True)
class DemoPlan:
    """What the demo streams.

    The demo's world runs faster than the wall clock: ``rate`` transactions per wall
    second, while event time advances ``time_scale`` times faster (1800: a wall second is
    half an hour), so a few minutes of streaming cover days of card activity with realistic
    per-card gaps, hours of the day and chargeback delays. The history the models learn
    from is the same world just before the live stream, and its entity state is backfilled
    into Redis, so live features continue from it. The defaults make every monitor fire:
    concept drift and data drift on one feature after ``concept_drift_at``, a volume drop
    across many one-hour windows, and garbage records.
    """

    history_events: int = 60_000
    live_events: int = 27_000
    rate: float = 100.0
    time_scale: float = 1800.0
    garbage: float = 0.02
    concept_drift_at: int = 6_000
    data_drift_at: int = 6_000
    data_drift_feature: str | None = None  # None: the spec's simulation.data_drift_feature
    volume_drop_at: int = 12_000
    volume_drop_len: int = 6_000
    volume_drop: float = 0.3
    outcome_delay_days: float = 1.5
    outcome_wait_s: float = 45.0
    seed: int = 7

    @classmethod
    def quick(cls) -> DemoPlan:
        """About a minute of streaming."""
        return cls(history_events=40_000, live_events=9_000, rate=150.0, concept_drift_at=3_000,
                   data_drift_at=3_000, volume_drop_at=4_500, volume_drop_len=2_000,
                   outcome_delay_days=0.5, outcome_wait_s=25.0)

    @property
    def event_ms_per_event(self) -> float:
        return 1000.0 / self.rate * self.time_scale

    def sim_config(self, **kwargs: Any) -> Any:
        """The simulator's config; the spec passed with it chooses the simulator."""
        from precog.simulate import SimConfig

        return SimConfig(outcome_delay_median_ms=self.outcome_delay_days * 86_400_000, **kwargs)


def reset_namespace(settings: Settings, spec: PipelineSpec, home: Path) -> None:
    from precog.namespace import drop_namespace, setup_namespace

    say(f"resetting namespace {settings.namespace!r} (its topics, indices, Redis keys, {home})")
    drop_namespace(settings, force=True)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    setup_namespace(settings, spec, echo=lambda m: say(f"  {m}"))


def simulate_and_train(settings: Settings, spec: PipelineSpec, home: Path, plan: DemoPlan) -> Any:
    from precog.pipelines.backfill import backfill
    from precog.pipelines.train import train
    from precog.simulate import write_history

    days = plan.history_events * plan.event_ms_per_event / 86_400_000
    # the live run's latest possible start: it must end before now
    live_start = int(time.time() * 1000 - 1.05 * plan.live_events * plan.event_ms_per_event)
    say(f"simulating {plan.history_events} historic {spec.business.event_noun} (seed"
        f" {plan.seed}) over {days:.1f} days, {spec.simulation.outcome_source} after"
        f" ~{plan.outcome_delay_days:g} days")
    hist = write_history(home / "history", plan.history_events, seed=plan.seed,
                         end_ms=live_start, config=plan.sim_config(), days=days, spec=spec)
    say(f"  {hist.events} events, fraud rate {hist.positive_rate:.2%}, {hist.outcomes} outcomes"
        f" -> {home / 'history'}")
    say("training and registering the leader and the challenger")
    metas = train(settings, spec, home / "history", log=lambda m: say(f"  {m}"))
    for m in metas:
        h = m.holdout
        say(f"  {m.model_id} v{m.version} ({m.algorithm}): holdout precision {h.precision:.3f}"
            f" recall {h.recall:.3f} ROC AUC {h.roc_auc:.4f} threshold {m.threshold:.3f}")
    say("backfilling the history's entity state into Redis, so live features continue from it")
    backfill(settings, spec, home / "history", log=lambda m: say(f"  {m}"))
    return hist


class LiveWatch:
    """Leader vs challenger accuracy and new alerts from Elasticsearch, while the stream runs."""

    def __init__(self, settings: Settings) -> None:
        from precog.io.elasticsearch import elasticsearch_client

        self.settings = settings
        self.es = elasticsearch_client(settings)
        self.seen: set[str] = set()
        self.shown_kinds: dict[str, int] = {}

    def line(self) -> str:
        """`` F1 leader 0.41 / challenger 0.30`` once cumulative metrics exist."""
        try:
            hits = self.es.search(index=self.settings.index("metrics"), size=20,
                                  query={"term": {"window": "cumulative"}},
                                  sort=[{"computed_time": "desc"}],
                                  ignore_unavailable=True)["hits"]["hits"]
        except Exception:  # the progress line must never stop the demo
            return ""
        latest: dict[str, float] = {}
        for h in hits:
            m = h["_source"]
            if m["role"] not in latest and m.get("f1") is not None:
                latest[m["role"]] = m["f1"]
        if not latest:
            return ""
        return "  F1 " + " / ".join(f"{role} {v:.2f}" for role, v in sorted(
            latest.items(), key=lambda kv: kv[0] != "leader"))

    def new_alerts(self, per_kind: int = 2) -> list[str]:
        """Messages of alerts not shown yet (at most ``per_kind`` of each kind in all)."""
        try:
            hits = self.es.search(index=self.settings.index("alerts"), size=200,
                                  sort=[{"detected_time": "asc"}],
                                  ignore_unavailable=True)["hits"]["hits"]
        except Exception:
            return []
        out = []
        for h in hits:
            a = h["_source"]
            if a["alert_id"] in self.seen:
                continue
            self.seen.add(a["alert_id"])
            shown = self.shown_kinds.get(a["kind"], 0)
            if shown < per_kind:
                out.append(f"{a['kind']}: {a['message']}")
            elif shown == per_kind:
                out.append(f"{a['kind']}: more of these (see the summary below)")
            self.shown_kinds[a["kind"]] = shown + 1
        return out


def stream_live(
    settings: Settings, spec: PipelineSpec, worker: Any, plan: DemoPlan, start_ms: int
) -> Any:
    """Produce the live stream in a thread and show the worker's progress every 2 s."""
    from precog.simulate import produce_live
    from precog.workers import metric_total

    # the same seed: the same cards, merchants and habits as the history (only the event
    # times and ids differ), so live features continue the world the models learned from
    drift = plan.data_drift_feature or spec.simulation.data_drift_feature
    cfg = plan.sim_config(seed=plan.seed, garbage_fraction=plan.garbage,
                          concept_drift_at=plan.concept_drift_at,
                          data_drift_at=plan.data_drift_at, data_drift_feature=drift,
                          volume_drop_at=plan.volume_drop_at,
                          volume_drop_len=plan.volume_drop_len, volume_drop=plan.volume_drop)
    days = plan.live_events * plan.event_ms_per_event / 86_400_000
    say(f"streaming {plan.live_events} live events ({days:.1f} days of event time) at"
        f" {plan.rate:.0f}/s with {plan.garbage:.0%}"
        f" garbage; concept + data drift ({drift}) at event"
        f" {plan.concept_drift_at}, a {plan.volume_drop:.0%} volume drop from event"
        f" {plan.volume_drop_at} to {plan.volume_drop_at + plan.volume_drop_len}")
    result: dict[str, Any] = {}

    def produce() -> None:
        try:
            result["summary"] = produce_live(
                settings, spec, plan.live_events, plan.rate, cfg, progress=False,
                outcome_delay_scale=1.0, outcome_wait_s=plan.outcome_wait_s,
                time_scale=plan.time_scale, start_ms=start_ms)
        except Exception as exc:  # reported below, after the progress loop
            result["error"] = exc

    thread = threading.Thread(target=produce, name="demo-producer", daemon=True)
    thread.start()
    watch = LiveWatch(settings)
    last, last_t = 0.0, time.monotonic()
    while thread.is_alive():
        thread.join(2.0)
        try:
            text = worker.metrics()
        except OSError:
            continue
        events = metric_total(text, "precog_events_in_total")
        now = time.monotonic()
        rate = (events - last) / (now - last_t)
        last, last_t = events, now
        say(f"  events {events:7.0f} ({rate:6.1f}/s)  predictions"
            f" {metric_total(text, 'precog_predictions_out_total'):7.0f}  dead letters"
            f" {metric_total(text, 'precog_dead_letters_total'):4.0f}  indexed"
            f" {metric_total(text, 'precog_documents_indexed_total'):7.0f}{watch.line()}")
        for message in watch.new_alerts():
            say(f"    ALERT {message}")
    if "error" in result:
        raise result["error"]
    return result["summary"]


def wait_until_drained(settings: Settings, spec: PipelineSpec, timeout: float = 60.0) -> None:
    """Wait until the worker caught up: every event scored or dead-lettered, every doc indexed."""
    from precog.io.elasticsearch import elasticsearch_client
    from precog.replay.runner import count_topic

    deadline = time.monotonic() + timeout
    es = elasticsearch_client(settings)
    while time.monotonic() < deadline:
        events = count_topic(settings, spec.event.topic)
        done = count_topic(settings, "predictions") + count_topic(settings, "dlq")
        es.indices.refresh(index=settings.index("predictions"))
        docs = es.count(index=settings.index("predictions"))["count"]
        if done >= events and docs >= 2 * count_topic(settings, "predictions"):
            return
        time.sleep(1.0)
    say("  (the worker had not caught up within the wait; counts below are as they stand)")


def reconcile(settings: Settings, spec: PipelineSpec, sent: int) -> bool:
    from precog.io.elasticsearch import elasticsearch_client
    from precog.replay.runner import count_topic

    events = count_topic(settings, spec.event.topic)
    predictions = count_topic(settings, "predictions")
    dead = count_topic(settings, "dlq")
    es = elasticsearch_client(settings)
    es.indices.refresh(index=settings.index("predictions"))
    docs = int(es.count(index=settings.index("predictions"))["count"])
    models = 1 + len([m for m in spec.models if m.role == "challenger"])
    ok_events = events == predictions + dead == sent
    ok_docs = docs == models * predictions
    say("reconciliation")
    say(f"  events on {settings.topic(spec.event.topic)}: {events} (producer sent {sent})")
    say(f"  = predictions {predictions} + dead letters {dead}:"
        f" {'OK' if ok_events else 'MISMATCH'}")
    say(f"  Elasticsearch documents {docs} = {models} x predictions {predictions}:"
        f" {'OK' if ok_docs else 'MISMATCH'}")
    return ok_events and ok_docs


def show_provenance(settings: Settings) -> None:
    from precog.avro import Codec
    from precog.io.elasticsearch import elasticsearch_client
    from precog.registry import ModelRegistry
    from precog.replay.runner import read_topic

    record = Codec.for_schema("prediction").decode(read_topic(settings, "predictions")[0].value())
    lead = record["leader"]
    meta = ModelRegistry(settings.registry_dir).get(lead["model_id"], lead["version"])
    es = elasticsearch_client(settings)
    doc = es.get(index=settings.index("models"), id=f"{lead['model_id']}:{lead['version']}")
    prov = record["provenance"]

    def iso(ms: int) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))

    say(f"provenance of prediction {record['prediction_id']} (event {record['event_id']})")
    say(f"  read from {prov['source_topic']}[{prov['partition']}]@{prov['offset']},"
        f" schema {prov['event_schema']}, code {prov['code_version']}, worker {prov['worker']}")
    say(f"  leader {lead['model_id']} v{lead['version']}: score {lead['score']:.4f} ->"
        f" label {lead['label']} at threshold {lead['threshold']:.3f}")
    indexed_sha = doc["_source"]["artifact_sha256"]
    say(f"  artifact sha256 {lead['artifact_sha256'][:16]}... = registry"
        f" {meta.artifact_sha256[:16]}... = model index {indexed_sha[:16]}...")
    say(f"  trained on {meta.training_rows} events from {iso(meta.training_window_start)} to"
        f" {iso(meta.training_window_end)} (data sha256 {meta.training_data_sha256[:16]}...),"
        f" holdout ROC AUC {meta.holdout.roc_auc:.4f}")
    for c in record["challengers"]:
        say(f"  challenger {c['model_id']} v{c['version']}: score {c['score']:.4f}")
    ages = ", ".join(f"{f['name']}={f['value']:.3g} ({f['age_ms'] / 1000:.0f}s old)"
                     for f in record["features"][5:9])
    say(f"  features (some): {ages}")


def show_metrics_and_alerts(settings: Settings) -> None:
    from precog.io.elasticsearch import elasticsearch_client

    es = elasticsearch_client(settings)
    for idx in ("metrics", "alerts"):
        if es.indices.exists(index=settings.index(idx)):
            es.indices.refresh(index=settings.index(idx))
    say("online metrics, cumulative (newest per model)")
    if es.indices.exists(index=settings.index("metrics")):
        hits = es.search(index=settings.index("metrics"), size=200,
                         query={"term": {"window": "cumulative"}},
                         sort=[{"computed_time": "desc"}])["hits"]["hits"]
        seen: set[tuple[str, int]] = set()
        for h in hits:
            m = h["_source"]
            key = (m["model_id"], m["version"])
            if key in seen:
                continue
            seen.add(key)

            def f(name: str, src: dict[str, Any] = m) -> str:
                v = src.get(name)
                return "  n/a" if v is None else f"{v:.3f}"

            say(f"  {m['role']:10s} {m['model_id']} v{m['version']}: labels {m['n_labels']:5d}"
                f"  accuracy {f('accuracy')}  precision {f('precision')}  recall {f('recall')}"
                f"  F1 {f('f1')}  ROC AUC {f('roc_auc')}  coverage {f('label_coverage')}")
    say("alerts")
    if es.indices.exists(index=settings.index("alerts")):
        kinds = es.search(index=settings.index("alerts"), size=0, aggs={
            "kind": {"terms": {"field": "kind", "size": 20},
                     "aggs": {"detector": {"terms": {"field": "detector", "size": 20}},
                              "feature": {"terms": {"field": "feature", "size": 20}}}},
        })["aggregations"]["kind"]["buckets"]
        for k in kinds:
            for d in k["detector"]["buckets"]:
                features = ", ".join(f["key"] for f in k["feature"]["buckets"])
                say(f"  {k['key']:17s} {d['key']:22s} fired {d['doc_count']:3d} times"
                    + (f" (features: {features})" if features else ""))
        for k in kinds:  # the first alert of each kind, with its evidence
            first = es.search(index=settings.index("alerts"), size=1,
                              query={"term": {"kind": k["key"]}},
                              sort=[{"event_time": "asc"}])["hits"]["hits"]
            for h in first:
                say(f"    first {k['key']}: {h['_source']['message']}")


def show_promotion_decision(settings: Settings, spec: PipelineSpec) -> dict[str, Any]:
    """One evaluation of the best-recent promotion policy on the demo's joined labels: the
    decision (promote the challenger, or keep the leader) with its evidence
    (docs/lifecycle.md)."""
    from precog.services.lifecycle import evaluate

    policy = PromotionSpec(policy="best-recent", metric="f1", window="30d", interval="1m",
                           min_labels=200, margin=0.0, bootstrap_samples=1000, cooldown="0s")
    say("promotion policy best-recent (F1, paired bootstrap on the same labelled events)")
    out = evaluate(settings, spec.model_copy(update={"promotion": policy}))
    d = out.decision
    say(f"  decision {d['decision_id']}: {d['action']}: {d['reason']}")
    for c in d["candidates"]:
        if c["n"]:
            say(f"  {c['model_id']} v{c['version']}: {c['status']}, F1 {c['value']:.4f} vs the"
                f" leader's {c['leader_value']:.4f} on {c['n']} events, p={c['p_value']:.4f}")
    if out.applied:
        say(f"  applied: leader is now {out.roles.leader}; the old leader stays a challenger")
    return d


def write_report(settings: Settings, out: Path) -> None:
    say("rendering the dashboards' panels with `precog report`")
    subprocess.run(
        [sys.executable, "-m", "precog", "report", "--namespace", settings.namespace,
         "--out", str(out)],
        check=True,
    )
    say(f"report: {out / 'report.html'}")


@dataclass
class DemoResult:
    """What the demo did, for the summary line and for the end-to-end test."""

    ok: bool
    plan: DemoPlan
    live_start_ms: int
    summary: Any
    report: Path


def run(
    base: Settings,
    namespace: str = "demo",
    quick: bool = False,
    home: Path | None = None,
    report_dir: Path | None = None,
) -> DemoResult:
    """The whole demo; ``result.ok`` is True when the counts reconcile."""
    from precog.workers import WorkerProcess

    plan = DemoPlan.quick() if quick else DemoPlan()
    home = home or Path(".precog/demo") / namespace
    report_dir = report_dir or Path("reports") / f"{namespace}-demo"
    settings = base.model_copy(update={
        "namespace": namespace,
        "registry_dir": home / "registry",
        "spec": Path(base.spec).resolve(),
        "monitor": base.monitor.model_copy(update={"tick_seconds": 2.0}),
    })
    spec = load_spec(settings.spec)
    reset_namespace(settings, spec, home)
    history = simulate_and_train(settings, spec, home, plan)
    say("starting `precog worker` (control, score, index, join, monitor agents)")
    # drift windows of a simulated day: shorter ones would see the hours of the day as drift
    psi_window = int(86_400_000 / plan.event_ms_per_event)
    # fraud is ~2% of labels, so a changed fraud pattern moves the error rate a little:
    # a more sensitive ADWIN (delta 0.05 instead of 0.002) shows it within the demo
    worker = WorkerProcess(settings, home, extra_env={
        "PRECOG_MONITOR_PSI_WINDOW": str(psi_window), "PRECOG_MONITOR_ADWIN_DELTA": "0.05"})
    try:
        body = worker.wait_healthy()
        scoring = ", ".join(f"{m['role']} {m['model_id']} v{m['version']}"
                            for m in body["models"]["scoring"])
        say(f"  worker healthy on :{worker.port} (/health, /metrics), scoring with {scoring};"
            f" log {worker.log_path}")
        live_start = history.last_event_time + int(plan.event_ms_per_event)
        summary = stream_live(settings, spec, worker, plan, start_ms=live_start)
        say(f"  producer: sent {summary.sent}, garbage {summary.garbage}, dropped by the"
            f" volume drop {summary.dropped}, outcomes {summary.outcomes_sent},"
            f" manifests {summary.manifests_sent}")
        wait_until_drained(settings, spec)
        time.sleep(2 * settings.monitor.tick_seconds + 1)  # the monitor's last tick
        ok = reconcile(settings, spec, summary.sent)
        show_provenance(settings)
        show_metrics_and_alerts(settings)
        show_promotion_decision(settings, spec)
    finally:
        worker.stop()
    write_report(settings, report_dir)
    return DemoResult(ok, plan, live_start, summary, report_dir / "report.html")
