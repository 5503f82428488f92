"""The catalog: every precog dashboard and its panels, worded by the spec's ``business``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from precog.dashboards.model import (
    Control,
    Dashboard,
    DateHistogram,
    Exists,
    Filters,
    Histogram,
    Is,
    Metric,
    Not,
    Panel,
    Terms,
)
from precog.spec import BusinessSpec

NS_CONTROL = Control("namespace", "Namespace")
MODEL_CONTROL = Control("model_id", "Model")
LEADER = Is("role", "leader")
#: The document of the model whose decision was served for its event (one per event): the
#: leader's under shadow, the arm's model under a canary or A/B split.
SERVED = Is("served", True)
CUMULATIVE = Is("window", "cumulative")
#: One series per model version and role, per index (the version field's name differs):
#: a model's versions and its leader and challenger runs are never merged into one line.
BY_MODEL = {
    "metrics": Terms("model_id", 10, "model", also=("version", "role")),
    "predictions": Terms("model_id", 10, "model", also=("model_version", "role")),
    "alerts": Terms("model_id", 10, "model", also=("version",)),
}
#: The predictions documents' business amount: the value of the spec's
#: ``business.amount_feature`` (docs/documents.md), which the amount panels sum.
AMOUNT_FIELD = "amount"


def _metric_over_time(pid: str, title: str, fld: str) -> Panel:
    return Panel(
        pid, title, "metrics", "line", x=DateHistogram("event_time"), split=BY_MODEL["metrics"],
        metrics=(Metric("avg", fld, title),), filters=(CUMULATIVE,),
        description=f"cumulative {fld} per model (leader and challengers)",
    )


def _model_performance() -> Dashboard:
    return Dashboard(
        "precog-model-performance", "precog: Model performance",
        "Leader vs challengers over time, label coverage and latency, and which version "
        "led when.",
        panels=(
            _metric_over_time("mp-accuracy", "Accuracy", "accuracy"),
            _metric_over_time("mp-precision", "Precision", "precision"),
            _metric_over_time("mp-recall", "Recall", "recall"),
            _metric_over_time("mp-f1", "F1", "f1"),
            _metric_over_time("mp-roc-auc", "ROC AUC", "roc_auc"),
            _metric_over_time("mp-coverage", "Label coverage", "label_coverage"),
            Panel(
                "mp-f1-estimated", "F1 estimated from the scores, before labels (hourly)",
                "metrics", "line", x=DateHistogram("event_time"), split=BY_MODEL["metrics"],
                metrics=(Metric("max", "f1", "estimated F1"),),
                filters=(Is("window", "estimated_1h"),),
                description="confidence-based estimate per event-time hour (docs/monitoring.md);"
                " trust it only while no calibration alert is open",
            ),
            Panel(
                "mp-f1-realised", "F1 realised in the same hours, as labels arrive",
                "metrics", "line", x=DateHistogram("event_time"), split=BY_MODEL["metrics"],
                metrics=(Metric("max", "f1", "realised F1"),
                         Metric("max", "label_coverage", "label coverage")),
                filters=(Is("window", "realised_1h"),),
            ),
            Panel(
                "mp-latency", "Label latency (ms)", "metrics", "line",
                x=DateHistogram("event_time"), split=BY_MODEL["metrics"], filters=(CUMULATIVE,),
                metrics=(Metric("avg", "label_latency_p50_ms", "p50 latency"),
                         Metric("avg", "label_latency_p95_ms", "p95 latency")),
            ),
            Panel(
                "mp-leader-timeline", "Which version was leader when", "predictions", "table",
                x=Terms("leader_model_id", 10, "leader"),
                split=Terms("leader_version", 20, "version"), filters=(LEADER,),
                metrics=(Metric("min", "event_time", "first decision"),
                         Metric("max", "event_time", "last decision"),
                         Metric("count", label="events decided")),
                description="from the predictions: every event carries the leader that "
                "decided it",
            ),
            Panel(
                "mp-by-namespace", "Side by side: namespace and model", "metrics", "table",
                x=Terms("namespace", 10, "namespace"), split=BY_MODEL["metrics"],
                filters=(CUMULATIVE,),
                metrics=(Metric("max", "n_labels", "labels"),
                         Metric("avg", "accuracy", "accuracy"), Metric("avg", "f1", "F1"),
                         Metric("avg", "roc_auc", "ROC AUC")),
                width=48,
            ),
        ),
        controls=(NS_CONTROL, MODEL_CONTROL, Control("role", "Role")),
    )


def _lifecycle() -> Dashboard:
    promotion, traffic = Is("kind", "promotion"), Is("kind", "traffic")
    by_arm = Terms("arm", 10, "arm", also=("model_id", "version", "role"))
    arm_metrics = (CUMULATIVE, Exists("arm"))

    def per_arm(pid: str, title: str, fld: str) -> Panel:
        return Panel(pid, title, "metrics", "line", x=DateHistogram("event_time"),
                     split=by_arm, filters=arm_metrics, metrics=(Metric("avg", fld, fld),),
                     description=f"cumulative {fld} of each arm's model on the arm's events"
                     " only (its served decisions; docs/lifecycle.md \"Traffic\")")

    return Dashboard(
        "precog-lifecycle", "precog: Model lifecycle",
        "The promotion policy's decisions: the leader at each evaluation, what it was"
        " compared with, and the evidence. The traffic policy's decisions (canary start,"
        " step, rollback, promotion), the metrics of each traffic arm and whose decision"
        " was served.",
        panels=(
            Panel(
                "lc-decisions-timeline", "Promotion policy: leader at each evaluation",
                "decisions", "bar_stacked", x=DateHistogram("evaluated_time"),
                split=Terms("leader_model", 10, "leader"), filters=(promotion,),
                metrics=(Metric("count", label="evaluations"),),
                description="one decision per evaluation interval (docs/lifecycle.md); the"
                " colour is the leader it was made on",
            ),
            Panel("lc-decisions", "Promotion decisions and their evidence", "decisions",
                  "search", width=48, filters=(promotion,),
                  columns=("action", "leader_model", "chosen_model", "metric", "test",
                           "margin", "candidates.gain", "candidates.p_value", "candidates.n",
                           "reason")),
            Panel(
                "lc-traffic-timeline", "Traffic policy: decisions by action", "decisions",
                "bar_stacked", x=DateHistogram("evaluated_time"),
                split=Terms("action", 10, "action"), filters=(traffic,),
                metrics=(Metric("count", label="traffic decisions"),),
                description="start, step, promote, rollback, keep or end: one per"
                " traffic.interval",
            ),
            Panel(
                "lc-canary-share", "Canary share after each traffic decision (%)",
                "decisions", "line", x=DateHistogram("evaluated_time"),
                split=Terms("chosen_model", 10, "candidate"), filters=(traffic,),
                metrics=(Metric("max", "traffic.to_percent", "share after (%)"),
                         Metric("max", "traffic.from_percent", "share before (%)")),
                description="0 after a rollback; the step to 100% is the promotion",
            ),
            Panel("lc-traffic-decisions", "Traffic decisions and their evidence",
                  "decisions", "search", width=48, filters=(traffic,),
                  columns=("action", "chosen_model", "leader_model", "traffic.step",
                           "traffic.from_percent", "traffic.to_percent", "metric",
                           "candidates.value", "candidates.leader_value",
                           "traffic.arm_labels", "traffic.error_rate",
                           "traffic.leader_error_rate", "traffic.max_drop",
                           "traffic.max_error_increase", "reason")),
            per_arm("lc-arm-f1", "F1 per traffic arm", "f1"),
            per_arm("lc-arm-precision", "Precision per traffic arm", "precision"),
            per_arm("lc-arm-recall", "Recall per traffic arm", "recall"),
            Panel(
                "lc-served-share", "Served events per arm (the stack is the share)",
                "predictions", "bar_stacked", x=DateHistogram("event_time"),
                split=Terms("arm", 10, "arm"), filters=(SERVED,),
                metrics=(Metric("count", label="events served"),),
                description="one document per event is the served one (served = true);"
                " arm 'leader' under shadow",
            ),
        ),
        controls=(NS_CONTROL,),
    )


def _drift_and_alerts() -> Dashboard:
    return Dashboard(
        "precog-drift-alerts", "precog: Drift and alerts",
        "Alert timeline by detector, model and feature; per-feature drift statistics.",
        panels=(
            Panel("da-by-detector", "Alerts over time by detector", "alerts", "bar_stacked",
                  x=DateHistogram("event_time"), split=Terms("detector", 10, "detector"),
                  metrics=(Metric("count", label="alerts"),)),
            Panel("da-by-model", "Alerts by model and kind", "alerts", "bar",
                  x=BY_MODEL["alerts"], split=Terms("kind", 10, "kind"),
                  metrics=(Metric("count", label="alerts"),)),
            Panel("da-by-feature", "Alerts by feature and detector", "alerts", "bar",
                  x=Terms("feature", 20, "feature"), split=Terms("detector", 10, "detector"),
                  metrics=(Metric("count", label="alerts"),)),
            Panel("da-feature-drift", "Data drift statistic per feature", "alerts", "line",
                  x=DateHistogram("event_time"), split=Terms("feature", 20, "feature"),
                  filters=(Is("kind", "data_drift"),),
                  metrics=(Metric("max", "statistic", "drift statistic"),)),
            Panel("da-model-drift", "Concept and prediction drift statistic per model",
                  "alerts", "line", x=DateHistogram("event_time"), split=BY_MODEL["alerts"],
                  filters=(Not(Is("kind", "data_drift")), Exists("model_id")),
                  metrics=(Metric("max", "statistic", "drift statistic"),)),
            Panel("da-alerts", "Alerts", "alerts", "search", width=48,
                  columns=("kind", "detector", "severity", "model_id", "version", "feature",
                           "source", "window", "statistic", "threshold", "message")),
        ),
        controls=(NS_CONTROL, MODEL_CONTROL, Control("kind", "Alert kind"),
                  Control("feature", "Feature")),
    )


def _pipeline_health() -> Dashboard:
    health = "pipeline-health"
    ws = DateHistogram("window_start")

    def by_name(pid: str, title: str, kind: str, label: str) -> Panel:
        return Panel(pid, title, health, "bar_stacked", x=ws, split=Terms("name", 20, kind),
                     filters=(Is("kind", kind),), metrics=(Metric("sum", "count", label),))

    return Dashboard(
        "precog-pipeline-health", "precog: Data pipeline health",
        "Received vs expected per source and window, quality failures, dead letters, "
        "outliers and consumer lag.",
        panels=(
            Panel("ph-volume", "Received vs expected per source", health, "line", x=ws,
                  split=Terms("source", 10, "source"), filters=(Is("kind", "volume"),),
                  metrics=(Metric("sum", "received", "received"),
                           Metric("sum", "expected", "expected (manifests)"),
                           Metric("sum", "expected_baseline", "expected (baseline)"))),
            Panel("ph-ratio", "Received / expected per source", health, "line", x=ws,
                  split=Terms("source", 10, "source"), filters=(Is("kind", "volume"),),
                  metrics=(Metric("ratio", "received", "received / expected",
                                  denominator="expected"),),
                  description="sum(received) / sum(expected) per bucket: a ratio of sums, "
                  "never an aggregate of per-window ratios"),
            by_name("ph-quality", "Quality failures by check", "quality", "failures"),
            by_name("ph-dead-letters", "Dead letters by reason", "dead_letter", "dead letters"),
            by_name("ph-outliers", "Outliers by feature", "outlier", "outliers"),
            Panel("ph-lag", "Consumer lag", health, "line", x=ws,
                  split=Terms("name", 10, "consumer"), filters=(Is("kind", "lag"),),
                  metrics=(Metric("max", "lag", "lag (messages)"),)),
        ),
        controls=(NS_CONTROL, Control("source", "Source"), Control("kind", "Kind")),
    )


def _predictions_provenance(feature_names: Sequence[str]) -> Dashboard:
    feature_columns = tuple(f"features.{n}" for n in feature_names) + tuple(
        f"feature_ages_ms.{n}" for n in feature_names)
    return Dashboard(
        "precog-predictions-provenance", "precog: Predictions and provenance",
        "Score distributions, decision rates, the predictions with their features and "
        "provenance, and the model index.",
        panels=(
            Panel("pp-scores", "Score distribution per model", "predictions", "histogram",
                  x=Histogram("score", 0.05, 0.0, 1.0), split=BY_MODEL["predictions"],
                  metrics=(Metric("count", label="predictions"),)),
            Panel("pp-decision-rate", "Decision rate per model", "predictions", "line",
                  x=DateHistogram("event_time"), split=BY_MODEL["predictions"],
                  metrics=(Metric("avg", "label", "flagged share"),)),
            Panel("pp-volume", "Predictions per model version", "predictions", "table",
                  x=Terms("model_id", 10, "model"),
                  split=Terms("model_version", 20, "version", also=("role",)),
                  metrics=(Metric("count", label="predictions"),
                           Metric("avg", "score", "mean score"),
                           Metric("avg", "label", "flagged share"),
                           Metric("max", "scored_time", "last scored"))),
            Panel("pp-predictions", "Predictions", "predictions", "search", width=48,
                  height=16,
                  columns=("prediction_id", "event_id", "entity_id", "model_id",
                           "model_version", "role", "score", "label", "threshold",
                           "leader_model_id", "leader_version", "policy", "arm", "served",
                           "served_model_id", "outcome_label",
                           "artifact_sha256", "provenance.code_version",
                           "provenance.source_topic", "provenance.partition",
                           "provenance.offset") + feature_columns),
            Panel("pp-models", "Model index", "models", "search", width=48,
                  description="every registered model version, whatever the time range",
                  columns=("model_id", "version", "algorithm", "training_window_start",
                           "training_window_end", "training_rows", "holdout_start",
                           "holdout_end", "holdout.precision", "holdout.recall",
                           "holdout.f1", "holdout.roc_auc", "holdout.log_loss", "threshold",
                           "artifact_sha256", "training_data_sha256", "code_version")),
        ),
        controls=(NS_CONTROL, MODEL_CONTROL),
    )


def _business_view(business: BusinessSpec) -> Dashboard:
    """Served decisions in the domain's words; the amount panels only with an amount, named
    after the spec's ``business.amount_feature``."""
    flagged = (SERVED, Is("served_label", 1))
    positive = Is("outcome_label", 1)
    events, pos = business.event_noun, business.positive_noun
    declined, approved = business.positive_decision, business.negative_decision
    has_amount = business.amount_feature is not None
    amount = (business.amount_feature or "").replace("_", " ")
    title = amount[:1].upper() + amount[1:]
    amount_panels = (
        Panel("bv-at-risk", f"{title} at risk", "predictions", "metric", filters=flagged,
              metrics=(Metric("sum", AMOUNT_FIELD, f"{amount} flagged"),), width=12,
              height=8),
    ) if has_amount else ()
    by_namespace_amounts = (
        Metric("sum", AMOUNT_FIELD, f"{amount} at risk", (Is("served_label", 1),)),
        Metric("sum", AMOUNT_FIELD, f"{pos} caught", (positive, Is("served_label", 1))),
        Metric("sum", AMOUNT_FIELD, f"{pos} missed", (positive, Is("served_label", 0))),
    ) if has_amount else ()
    amount_over_time = (
        Panel("bv-at-risk-time", f"{title} at risk over time", "predictions", "line",
              x=DateHistogram("event_time"), filters=flagged,
              metrics=(Metric("sum", AMOUNT_FIELD, f"{amount} at risk"),)),
    ) if has_amount else ()
    caught_missed = (
        Panel("bv-caught-missed", f"{pos.capitalize()} {amount} caught vs missed",
              "predictions", "bar_stacked", x=DateHistogram("event_time"),
              filters=(SERVED, positive),
              metrics=(Metric("sum", AMOUNT_FIELD, "caught", (Is("served_label", 1),)),
                       Metric("sum", AMOUNT_FIELD, "missed", (Is("served_label", 0),))),
              description=f"labelled {pos} only (outcome_label = 1)"),
    ) if has_amount else ()
    at_risk = f" and {amount} at risk" if has_amount else ""
    return Dashboard(
        "precog-business", "precog: Business view",
        f"Flagged {events}{at_risk}, {approved} vs {declined}, {pos} caught vs "
        "missed once outcomes arrive. Served decisions only (the leader's under shadow,"
        " each arm's model's under a canary or A/B split).",
        panels=(
            Panel("bv-flagged", f"Flagged {events}", "predictions", "metric",
                  filters=flagged, metrics=(Metric("count", label="flagged"),), width=12,
                  height=8),
            *amount_panels,
            Panel("bv-approval", f"{approved.capitalize()} vs {declined}", "predictions",
                  "pie", x=Filters("decision", ((approved, Is("served_label", 0)),
                                                (declined, Is("served_label", 1)))),
                  filters=(SERVED,),
                  metrics=(Metric("count", label=events),), height=8),
            Panel("bv-flagged-time", "Flagged over time", "predictions", "bar_stacked",
                  x=DateHistogram("event_time"), filters=flagged,
                  metrics=(Metric("count", label="flagged"),)),
            *amount_over_time,
            Panel("bv-decline-rate", f"{declined.capitalize()} share over time",
                  "predictions", "line", x=DateHistogram("event_time"), filters=(SERVED,),
                  metrics=(Metric("avg", "served_label", f"{declined} share"),)),
            *caught_missed,
            Panel("bv-by-namespace", "Side by side: namespace", "predictions", "table",
                  x=Terms("namespace", 10, "namespace"), filters=(SERVED,),
                  metrics=(Metric("count", label=events),
                           Metric("count", label="flagged", filters=(Is("served_label", 1),)),
                           *by_namespace_amounts),
                  width=48),
        ),
        controls=(NS_CONTROL, MODEL_CONTROL),
    )


def _replay_comparison() -> Dashboard:
    """``precog replay compare --index`` results, in the right (parallel) namespace's index."""
    compare = "replay-compare"
    sides = (Terms("left_namespace", 10, "left"), Terms("right_namespace", 10, "right"))
    return Dashboard(
        "precog-replay-compare", "precog: Replay comparison",
        "Production-parallel runs against the namespace they replayed: events on both "
        "sides, leader agreement, score differences per model version, the largest "
        "disagreements.",
        panels=(
            Panel("rc-summary", "Runs: events and leader agreement", compare, "table",
                  x=sides[0], split=sides[1], filters=(Is("kind", "summary"),),
                  metrics=(Metric("max", "events_both", "events on both"),
                           Metric("max", "only_left", "only left"),
                           Metric("max", "only_right", "only right"),
                           Metric("avg", "leader_agreement", "leader agreement"),
                           Metric("max", "computed_time", "last compared")),
                  width=48),
            Panel("rc-models", "Score differences per model version", compare, "table",
                  x=Terms("model_id", 10, "model"),
                  split=Terms("model_version", 20, "version"), filters=(Is("kind", "model"),),
                  metrics=(Metric("avg", "mean_abs_diff", "mean abs diff"),
                           Metric("max", "max_abs_diff", "max abs diff"),
                           Metric("avg", "label_agreement", "label agreement")),
                  width=48),
            Panel("rc-disagreements", "Largest disagreements", compare, "search", width=48,
                  filters=(Is("kind", "disagreement"),),
                  columns=("rank", "event_id", "entity_id", "left_model_id", "left_version",
                           "right_model_id", "right_version", "left_score", "right_score",
                           "abs_diff", "left_label", "right_label", "outcome_label")),
        ),
        controls=(Control("right_namespace", "Namespace (parallel side)"),
                  Control("left_namespace", "Compared with")),
    )


def dashboards(feature_names: Sequence[str] = (), business: BusinessSpec | None = None
               ) -> tuple[Dashboard, ...]:
    """All precog dashboards. ``feature_names`` (from the pipeline spec) become columns of
    the predictions table (``features.<name>`` and ``feature_ages_ms.<name>``); ``business``
    (the spec's ``business``) words the business view and says whether it has an amount.

    >>> [d.title for d in dashboards()]  # doctest: +NORMALIZE_WHITESPACE
    ['precog: Model performance', 'precog: Drift and alerts',
     'precog: Data pipeline health', 'precog: Predictions and provenance',
     'precog: Model lifecycle', 'precog: Replay comparison', 'precog: Business view']
    """
    return (_model_performance(), _drift_and_alerts(), _pipeline_health(),
            _predictions_provenance(feature_names), _lifecycle(), _replay_comparison(),
            _business_view(business or BusinessSpec()))


def all_panels(boards: Iterable[Dashboard]) -> list[Panel]:
    """Every panel of the given dashboards, in order."""
    return [p for d in boards for p in d.panels]

