"""The full pipeline demo: history -> training -> a live worker -> drift -> retrain -> canary.

(About 720 lines: one script read top to bottom, each step a function in the order it runs.)

The story (docs/lifecycle.md): the live stream's scheduled concept drift raises an alert;
the retrain controller (what ``precog retrain watch`` runs) sees it, retrains the spec's
models on the deployment's own topics and registers them as challengers; a canary of the
retrained version with the best holdout metric starts; the world after the drift streams
on in parts while every model scores every event, and between parts the canary controller
(what the worker's lifecycle agent runs under ``traffic: canary``) steps the canary up on
its arm's paired evidence, promotes it at 100%, or rolls it back with the reason; the demo
prints the decision trail from ``{ns}-decisions``.

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
from precog.spec import (
    PipelineSpec,
    RetrainingSpec,
    load_spec,
    parse_duration,
)


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
    across many one-hour windows, and garbage records. After the stream the demo waits at
    most ``trigger_wait_s`` for the retrain that the drift alert triggers, then streams
    ``after_retrain_events`` more of the drifted world (from the next volume window on), in
    ``len(canary_steps) - 1`` equal parts: the canary starts at ``canary_steps[0]`` percent
    of the cards, and after each part the canary controller decides on the arm's labels of
    that part (step up to the next share, promote at 100%, or roll back).
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
    after_retrain_events: int = 9_000
    trigger_wait_s: float = 60.0
    canary_steps: tuple[float, ...] = (20.0, 50.0, 100.0)
    canary_min_labels: int = 150  # canary-arm labels of a part before a step up
    canary_rollback_min_labels: int = 100  # ...before a rollback can be decided
    seed: int = 7

    @classmethod
    def quick(cls) -> DemoPlan:
        """About a minute of streaming."""
        return cls(history_events=40_000, live_events=9_000, rate=150.0, concept_drift_at=3_000,
                   data_drift_at=3_000, volume_drop_at=4_500, volume_drop_len=2_000,
                   outcome_delay_days=0.5, outcome_wait_s=25.0, after_retrain_events=6_000,
                   trigger_wait_s=45.0)

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
    # the live runs' latest possible start: both must end before now, with a gap of two
    # volume windows between them
    live = plan.live_events + plan.after_retrain_events
    live_start = int(time.time() * 1000 - 1.05 * live * plan.event_ms_per_event
                     - 2 * parse_duration(spec.volume.window))
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


def live_config(plan: DemoPlan, spec: PipelineSpec, after_retrain: bool = False) -> Any:
    """The live stream's simulator config; ``after_retrain``: the drifted world goes on
    (concept and data drift from its first event, no volume drop)."""
    # the same seed: the same cards, merchants and habits as the history (only the event
    # times and ids differ), so live features continue the world the models learned from
    drift = plan.data_drift_feature or spec.simulation.data_drift_feature
    if after_retrain:
        return plan.sim_config(seed=plan.seed, garbage_fraction=plan.garbage,
                               concept_drift_at=0, data_drift_at=0, data_drift_feature=drift)
    return plan.sim_config(seed=plan.seed, garbage_fraction=plan.garbage,
                           concept_drift_at=plan.concept_drift_at,
                           data_drift_at=plan.data_drift_at, data_drift_feature=drift,
                           volume_drop_at=plan.volume_drop_at,
                           volume_drop_len=plan.volume_drop_len, volume_drop=plan.volume_drop)


def stream_live(
    settings: Settings, spec: PipelineSpec, worker: Any, plan: DemoPlan, start_ms: int,
    n: int, cfg: Any, headline: str, watch: LiveWatch,
) -> Any:
    """Produce ``n`` live events in a thread and show the worker's progress every 2 s."""
    from precog.simulate import produce_live
    from precog.workers import metric_total

    days = n * plan.event_ms_per_event / 86_400_000
    say(f"streaming {n} live events ({days:.1f} days of event time) at {plan.rate:.0f}/s"
        f" with {plan.garbage:.0%} garbage; {headline}")
    result: dict[str, Any] = {}

    def produce() -> None:
        try:
            result["summary"] = produce_live(
                settings, spec, n, plan.rate, cfg, progress=False,
                outcome_delay_scale=1.0, outcome_wait_s=plan.outcome_wait_s,
                time_scale=plan.time_scale, start_ms=start_ms)
        except Exception as exc:  # reported below, after the progress loop
            result["error"] = exc

    thread = threading.Thread(target=produce, name="demo-producer", daemon=True)
    thread.start()
    try:
        last = metric_total(worker.metrics(), "precog_events_in_total")
    except OSError:
        last = 0.0
    last_t = time.monotonic()
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


def expected_documents(settings: Settings) -> int:
    """One Elasticsearch document per prediction and model that scored it (leader and the
    challengers of the roles the worker had then: the retrained ones join mid-run)."""
    from precog.avro import Codec
    from precog.replay.runner import read_topic

    codec = Codec.for_schema("prediction")
    return sum(1 + len(codec.decode(m.value())["challengers"])
               for m in read_topic(settings, "predictions"))


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
        if done >= events and docs >= expected_documents(settings):
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
    expected = expected_documents(settings)
    ok_events = events == predictions + dead == sent
    ok_docs = docs == expected
    say("reconciliation")
    say(f"  events on {settings.topic(spec.event.topic)}: {events} (producer sent {sent})")
    say(f"  = predictions {predictions} + dead letters {dead}:"
        f" {'OK' if ok_events else 'MISMATCH'}")
    say(f"  Elasticsearch documents {docs} = {expected} (each prediction's leader and"
        f" challengers): {'OK' if ok_docs else 'MISMATCH'}")
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


#: The demo's retraining triggers: a concept-drift alert of the leader, one run per demo.
RETRAINING = RetrainingSpec(triggers=["concept_drift"], window="7d", cooldown="1d",
                            max_challengers=3)


class RetrainController:
    """The retrain controller beside the worker (what ``precog retrain watch`` runs): checks
    the spec's triggers every ``every`` seconds, in a thread, until one run was made."""

    def __init__(self, settings: Settings, spec: PipelineSpec, every: float = 3.0) -> None:
        self.settings, self.every = settings, every
        self.spec = spec.model_copy(update={"retraining": RETRAINING})
        self.audit: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="demo-retrain", daemon=True)

    def start(self) -> RetrainController:
        say(f"retrain controller: checking the triggers {RETRAINING.triggers} every"
            f" {self.every:g} s (retrain on the last {RETRAINING.window} of the topics;"
            f" cool-down {RETRAINING.cooldown})")
        self._thread.start()
        return self

    def _log(self, message: str) -> None:
        if not message.startswith("no retraining trigger fired"):
            say(f"    [retrain] {message}")

    def _loop(self) -> None:
        from precog.errors import PrecogError
        from precog.pipelines.retrain_triggers import check

        while self.audit is None and not self._stop.is_set():
            try:
                self.audit = check(self.settings, self.spec, log=self._log)
            except PrecogError as exc:  # a dependency hiccup: the next check tries again
                say(f"    [retrain] check failed: {exc}")
            self._stop.wait(self.every)

    def wait(self, timeout: float) -> dict[str, Any] | None:
        """The run's audit record once made (at most ``timeout`` s from now), else None."""
        self._thread.join(timeout)
        self._stop.set()
        self._thread.join()
        return self.audit


def wait_until_scoring(worker: Any, refs: list[tuple[str, int]], timeout: float = 60.0) -> None:
    """Wait until the worker scores with every version of ``refs`` (its hot reload)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = worker.health()
        scoring = {(m["model_id"], m["version"]) for m in body.get("models", {}).get(
            "scoring", [])}
        if set(refs) <= scoring:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the worker did not load {refs} within {timeout:.0f} s:"
                       f" {worker.log_path}")


def registered(audit: dict[str, Any]) -> list[dict[str, Any]]:
    """A retrain run's holdout rows, one per new version (the others: its last window of
    joined labels)."""
    return [c for c in audit["candidates"] if c["status"] == "registered"]


def canary_candidate(audit: dict[str, Any]) -> tuple[str, int, str]:
    """The retrained version the canary starts on: the best holdout metric of the run's
    audit (each measured next to the leader's on the same held-out rows), and why."""
    rows = registered(audit)
    best = max(rows, key=lambda c: (c["value"], -c["version"]))
    others = ", ".join(f"{c['model_id']} v{c['version']} {c['value']:.4f}"
                       for c in rows if c is not best)
    why = (f"the best holdout {audit['metric']} of the retrained versions:"
           f" {best['value']:.4f} vs the leader's {best['leader_value']:.4f} on the same"
           f" {best['n']} events" + (f" (others: {others})" if others else ""))
    return best["model_id"], int(best["version"]), why


def canary_policy(spec: PipelineSpec, plan: DemoPlan, candidate: str) -> Any:
    """The demo's traffic policy: a canary of ``candidate`` stepping through
    ``plan.canary_steps``, evaluated once per volume window of event time (the demo's
    clock), with the worker's salt so its arms are the worker's."""
    from precog.spec import TrafficSpec

    return TrafficSpec(policy="canary", salt=spec.traffic.salt, candidate=candidate,
                       steps=list(plan.canary_steps), metric="f1",
                       min_labels=plan.canary_min_labels,
                       rollback_min_labels=plan.canary_rollback_min_labels, max_drop=0.05,
                       max_error_increase=0.02, interval=spec.volume.window)


def wait_until_revision(worker: Any, revision: int, timeout: float = 60.0) -> None:
    """Wait until the worker scores with the roles of ``revision`` or later (hot reload)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = worker.health()
        if (body.get("models") or {}).get("revision", -1) >= revision:
            return
        time.sleep(0.5)
    raise TimeoutError(f"the worker did not load roles revision {revision} within"
                       f" {timeout:.0f} s: {worker.log_path}")


def wait_until_joined(settings: Settings, settle: float = 3.0, timeout: float = 30.0) -> None:
    """Wait until ``{ns}.labeled`` stops growing for ``settle`` s: the join agent has joined
    the outcomes the producer sent."""
    from precog.replay.runner import count_topic

    deadline = time.monotonic() + timeout
    last, since = count_topic(settings, "labeled"), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = count_topic(settings, "labeled")
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            return


def canary_evaluation(settings: Settings, spec: PipelineSpec, worker: Any, now_ms: int
                      ) -> dict[str, Any]:
    """One evaluation of the canary policy (what the worker's lifecycle agent runs every
    ``traffic.interval``), recorded and applied like every decision.

    ``now_ms`` is the demo's clock: the event time where the next part of the stream
    starts. The simulated event times run 1800 times faster than the wall clock and end in
    the past, and the canary's evidence is the arm's joined labels with event times from the
    step's start (``roles.traffic.since``, set to ``now_ms``) to the interval boundary at
    ``now_ms``: exactly the part streamed since the last evaluation.
    """
    from precog.services.lifecycle import evaluate_traffic

    out = evaluate_traffic(settings, spec, now_ms=now_ms)
    d = out.decision
    ev = d["traffic"] or {}
    say(f"  canary decision {d['decision_id']} at event time {_iso(now_ms)}: {d['action']}:"
        f" {d['reason']}")
    if out.applied:
        share = ev.get("to_percent", 0.0)
        if d["action"] in ("start", "step"):
            say(f"  applied: {d['chosen']['model_id']} v{d['chosen']['version']} decides for"
                f" {share:g}% of the cards (roles revision {out.roles.revision})")
        elif d["action"] == "promote":
            say(f"  applied: the leader is now {out.roles.leader}; the old leader stays a"
                " challenger")
        elif d["action"] == "rollback":
            say(f"  applied: the leader {out.roles.leader} decides every event again; the"
                " candidate left the challengers")
        wait_until_revision(worker, out.roles.revision)
    return d


def promotion_review(settings: Settings, spec: PipelineSpec, since_ms: int, now_ms: int
                     ) -> dict[str, Any]:
    """One evaluation of the best-recent promotion policy (what the worker's lifecycle agent
    or ``precog models evaluate`` runs every ``promotion.interval``) on the joined labels
    of the events from ``since_ms`` to ``now_ms`` (the demo's event-time clock): every model
    scored each of them, so the evidence is paired. The spec's cool-down counts from the
    last change of the roles, i.e. the canary's last decision, at the same ``now_ms``: the
    review shows the evidence and keeps the leader the canary left (a promotion needs a
    later review)."""
    from precog.services.lifecycle import evaluate

    window = f"{max(1, (now_ms - since_ms) // 1000)}s"
    policy = spec.promotion.model_copy(update={"policy": "best-recent", "window": window,
                                               "interval": "1s"})
    say(f"promotion policy best-recent ({policy.metric}, {policy.test}, paired on the same"
        f" labelled events since {_iso(since_ms)}; cool-down {policy.cooldown} after a change"
        " of the roles)")
    out = evaluate(settings, spec.model_copy(update={"promotion": policy}), now_ms=now_ms)
    d = out.decision
    say(f"  decision {d['decision_id']}: {d['action']}: {d['reason']}")
    if out.applied:
        say(f"  applied: the leader is now {out.roles.leader}; the old leader stays a challenger")
    return d


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def show_trail(settings: Settings, spec: PipelineSpec) -> list[dict[str, Any]]:
    """The decision trail of this run from ``{ns}-decisions``, in the order the decisions
    were recorded (their order on ``{ns}.decisions``, keyed by spec: one partition; the
    canary's ``evaluated_time`` is the demo's event-time clock, which is in the past of the
    retrain's wall-clock time): the trigger, the retrain run, the challengers it registered,
    the canary's start, steps and its promotion or rollback, each with its evidence."""
    from precog.io.elasticsearch import elasticsearch_client
    from precog.replay.runner import read_topic
    from precog.schema_registry import namespace_codec
    from precog.services.lifecycle import recent_decisions

    elasticsearch_client(settings).indices.refresh(index=settings.index("decisions"))
    codec = namespace_codec(settings, spec, "decision")
    order: dict[str, int] = {}
    for m in read_topic(settings, "decisions"):
        order.setdefault(codec.decode(m.value())["decision_id"], len(order))
    trail = sorted(recent_decisions(settings, spec.name, limit=100),
                   key=lambda d: order.get(d["decision_id"], len(order)))
    say(f"the decision trail ({settings.index('decisions')}, in the order recorded)")
    if not trail:
        say("  (empty: no trigger fired and no decision was made)")
    for d in trail:
        at = _iso(d["evaluated_time"])
        if d["kind"] == "retrain":
            trigger, _, evidence = d["policy"].partition(": ")
            say(f"  {at} trigger {trigger}: {evidence}")
            say(f"  {at} retrain run {d['decision_id']}: {d['action']}: {d['reason']}"
                f" (data received {_iso(d['window_start'])}..{_iso(d['window_end'])})")
            if d["action"] == "registered":
                added = ", ".join(f"{c['model_id']} v{c['version']}" for c in registered(d))
                say(f"  {at} challengers registered: {added} (roles revision"
                    f" {d['roles_revision']} + 1; never as leader)")
                for c in d["candidates"]:
                    say(f"      {c['model_id']} v{c['version']}: {c['reason']}")
            continue
        if d["kind"] == "traffic":
            ev = d.get("traffic") or {}
            say(f"  event time {at} canary {d['action']} ({ev.get('from_percent', 0):g}% ->"
                f" {ev.get('to_percent', 0):g}%, {ev.get('arm_labels', 0)} arm labels)"
                f" {d['decision_id']}: {d['reason']}")
            continue
        say(f"  {at} decision {d['decision_id']} ({d['policy']}): {d['action']}:"
            f" {d['reason']}")
        for c in d["candidates"]:
            say(f"      {c['model_id']} v{c['version']}: {c['status']}: {c['reason']}")
    return trail


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
    summary: Any  # the live stream with the drift
    after: list[Any]  # the parts of the stream after the retrain
    retrain: dict[str, Any] | None  # the retrain run's audit record
    canary: list[dict[str, Any]]  # the canary's decisions: start, steps, promote/rollback
    review: dict[str, Any]  # the promotion policy's review after the canary
    trail: list[dict[str, Any]]  # the {ns}-decisions documents, oldest first
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
        watch = LiveWatch(settings)
        drift = plan.data_drift_feature or spec.simulation.data_drift_feature
        summary = stream_live(
            settings, spec, worker, plan, live_start, plan.live_events, live_config(plan, spec),
            f"concept + data drift ({drift}) at event {plan.concept_drift_at}, a"
            f" {plan.volume_drop:.0%} volume drop from event {plan.volume_drop_at} to"
            f" {plan.volume_drop_at + plan.volume_drop_len}", watch)
        say(f"  producer: sent {summary.sent}, garbage {summary.garbage}, dropped by the"
            f" volume drop {summary.dropped}, outcomes {summary.outcomes_sent},"
            f" manifests {summary.manifests_sent}")
        # the controller starts once the stream's outcomes are in: a run triggered as soon as
        # the alert fires would find too few labels of the drifted world to train and hold
        # out on, be audited as skipped, and its cool-down would hold back the next one
        controller = RetrainController(settings, spec).start()
        audit = controller.wait(plan.trigger_wait_s)
        if audit is None:
            say(f"  no retraining trigger fired within {plan.trigger_wait_s:.0f} s: the"
                " challengers are the trained ones")
        elif audit["action"] == "registered":
            wait_until_scoring(worker, [(c["model_id"], c["version"])
                                        for c in registered(audit)])
            say("  the worker scores every event with the retrained versions too")
        # the canary: the retrained version with the best holdout metric decides for a
        # share of the cards while the drifted world streams on in parts; between parts
        # the canary controller steps it up, promotes it at 100% or rolls it back
        window_ms = parse_duration(spec.volume.window)

        def next_window(ms: int) -> int:
            return ms - ms % window_ms + window_ms

        canary_spec, decisions = None, []
        parts = [plan.after_retrain_events]
        if audit is not None and audit["action"] == "registered":
            model_id, version, why = canary_candidate(audit)
            policy = canary_policy(spec, plan, model_id)
            canary_spec = spec.model_copy(update={"traffic": policy})
            k = len(policy.steps) - 1
            parts = [plan.after_retrain_events // k + (i < plan.after_retrain_events % k)
                     for i in range(k)]
            say(f"traffic policy canary of {model_id} v{version}: {why}")
            say(f"  steps {' -> '.join(f'{p:g}%' for p in policy.steps)} (100%: promotion);"
                f" after each of {k} parts of {parts[0]} events: step up with >="
                f" {policy.min_labels} arm labels, roll back (from"
                f" {policy.rollback_min_labels} labels) if its F1 is below the leader's by"
                f" more than {policy.max_drop} or its error rate above by more than"
                f" {policy.max_error_increase}, on the same arm events")
        part_start = after_start = next_window(summary.last_event_ms)
        if canary_spec is not None:
            decisions.append(canary_evaluation(settings, canary_spec, worker, part_start))
        after = []
        for i, n in enumerate(parts):
            deciding = canary_spec is not None and decisions[-1]["action"] in ("start", "step",
                                                                               "keep")
            headline = (f"the drifted world goes on, part {i + 1} of {len(parts)}: the"
                        " canary's evidence" if deciding else "the drifted world goes on")
            part = stream_live(settings, spec, worker, plan, part_start, n,
                               live_config(plan, spec, after_retrain=True), headline, watch)
            after.append(part)
            part_start = next_window(part.last_event_ms)
            if deciding and canary_spec is not None:
                wait_until_joined(settings)
                decisions.append(canary_evaluation(settings, canary_spec, worker, part_start))
        wait_until_drained(settings, spec)
        time.sleep(2 * settings.monitor.tick_seconds + 1)  # the monitor's last tick
        ok = reconcile(settings, spec, summary.sent + sum(a.sent for a in after))
        show_provenance(settings)
        show_metrics_and_alerts(settings)
        review = promotion_review(settings, spec, after_start, part_start)
        trail = show_trail(settings, spec)
    finally:
        worker.stop()
    write_report(settings, report_dir)
    return DemoResult(ok, plan, live_start, summary, after, audit, decisions, review, trail,
                      report_dir / "report.html")
