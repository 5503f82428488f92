"""Two namespaces' predictions joined by event id: score differences, decision agreement,
metrics against outcomes, the largest disagreements, and their Elasticsearch documents.

>>> def pred(eid, score, model="m", version=1):
...     ms = {"model_id": model, "version": version, "role": "leader", "score": score,
...           "label": int(score >= 0.5), "threshold": 0.5, "artifact_sha256": "x"}
...     return {"event_id": eid, "entity_id": "c", "event_time": 0, "leader": ms,
...             "challengers": [], "features": [{"name": "f", "value": 1.0, "age_ms": 0}],
...             "provenance": {"code_version": "v1"}}
>>> r = compare([pred("a", 0.25), pred("b", 0.75)], [pred("a", 0.25), pred("b", 0.25)],
...             {"a": 0, "b": 1}, {"a": 0, "b": 1}, left="prod", right="par")
>>> r.models[0].equal, r.models[0].max_abs_diff, r.leader_agreement
(1, 0.5, 0.5)
>>> [(m.side, m.model_id, m.recall) for m in r.metrics if m.role == "decision"]
[('left', '(leader)', 1.0), ('right', '(leader)', 0.0)]
>>> r.disagreements[0].event_id
'b'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

#: model_id of the pseudo model "whichever version led": the leader decision itself.
LEADER = "(leader)"


@dataclass(frozen=True)
class ModelDiff:
    """Score differences (right - left) of one model version over the events both scored."""

    model_id: str
    version: int
    count: int
    equal: int
    max_abs_diff: float
    mean_abs_diff: float
    label_agreement: float


@dataclass(frozen=True)
class SideMetrics:
    """One side's metrics of one model (or of the leader decision) on events with outcomes."""

    side: str
    namespace: str
    model_id: str
    version: int
    role: str
    n_labels: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    roc_auc: float | None


@dataclass(frozen=True)
class Disagreement:
    """One event both sides scored whose leader scores differ."""

    event_id: str
    entity_id: str
    event_time: int
    left_model_id: str
    left_version: int
    left_score: float
    left_label: int
    right_model_id: str
    right_version: int
    right_score: float
    right_label: int
    abs_diff: float
    outcome_label: int | None
    features: dict[str, float]
    feature_diffs: dict[str, float]


@dataclass
class CompareReport:
    """Everything ``precog replay compare`` reports."""

    left_namespace: str
    right_namespace: str
    events_left: int
    events_right: int
    events_both: int
    only_left: int
    only_right: int
    duplicates_left: int
    duplicates_right: int
    leader_agreement: float | None
    leader_agreements: int
    code_versions_left: list[str]
    code_versions_right: list[str]
    models: list[ModelDiff]
    metrics: list[SideMetrics]
    disagreements: list[Disagreement]
    only_left_sample: list[str] = field(default_factory=list)
    only_right_sample: list[str] = field(default_factory=list)
    dead_letters_left: int | None = None
    dead_letters_right: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def by_event(predictions: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Mapping[str, Any]], int]:
    """Predictions by event id (the last one wins) and how many duplicates were dropped.

    >>> by_event([{"event_id": "a", "n": 1}, {"event_id": "a", "n": 2}])
    ({'a': {'event_id': 'a', 'n': 2}}, 1)
    """
    out: dict[str, Mapping[str, Any]] = {}
    seen = 0
    for p in predictions:
        out[str(p["event_id"])] = p
        seen += 1
    return out, seen - len(out)


def latest_outcomes(outcomes: Iterable[Mapping[str, Any]], key: str = "event_id",
                    label: str = "label") -> dict[str, int]:
    """Label per event id; with duplicates the latest ``outcome_time`` wins (as in training).

    >>> latest_outcomes([{"event_id": "a", "label": 1, "outcome_time": 5},
    ...                  {"event_id": "a", "label": 0, "outcome_time": 3}])
    {'a': 1}
    """
    best: dict[str, tuple[int, int]] = {}
    for o in outcomes:
        eid, t = str(o[key]), int(o.get("outcome_time", 0))
        if eid not in best or t >= best[eid][0]:
            best[eid] = (t, int(o[label]))
    return {k: v[1] for k, v in best.items()}


def _scores(p: Mapping[str, Any]) -> dict[tuple[str, int], Mapping[str, Any]]:
    return {(m["model_id"], int(m["version"])): m for m in (p["leader"], *p["challengers"])}


def model_diffs(left: Mapping[str, Mapping[str, Any]], right: Mapping[str, Mapping[str, Any]],
                both: Sequence[str]) -> list[ModelDiff]:
    """Per model version scored on both sides for the same events: differences of scores."""
    diffs: dict[tuple[str, int], list[tuple[float, bool]]] = {}
    for eid in both:
        ls, rs = _scores(left[eid]), _scores(right[eid])
        for key in ls.keys() & rs.keys():
            d = float(rs[key]["score"]) - float(ls[key]["score"])
            diffs.setdefault(key, []).append((d, ls[key]["label"] == rs[key]["label"]))
    out = []
    for (model_id, version), rows in sorted(diffs.items()):
        a = np.abs(np.array([d for d, _ in rows], dtype=np.float64))
        out.append(ModelDiff(model_id, version, len(rows), int((a == 0.0).sum()),
                             float(a.max()), float(a.mean()),
                             sum(same for _, same in rows) / len(rows)))
    return out


def classification_metrics(y: Sequence[int], labels: Sequence[int], scores: Sequence[float]
                           ) -> dict[str, float | None]:
    """accuracy, precision, recall, f1 (decisions) and ROC AUC (scores; None with one class).

    >>> classification_metrics([0, 1, 1], [0, 1, 0], [0.1, 0.9, 0.4])["recall"]
    0.5
    """
    auc = float(roc_auc_score(y, scores)) if len(set(y)) == 2 else None
    return {
        "accuracy": float(accuracy_score(y, labels)),
        "precision": float(precision_score(y, labels, zero_division=0)),
        "recall": float(recall_score(y, labels, zero_division=0)),
        "f1": float(f1_score(y, labels, zero_division=0)),
        "roc_auc": auc,
    }


def side_metrics(side: str, namespace: str, preds: Mapping[str, Mapping[str, Any]],
                 outcomes: Mapping[str, int]) -> list[SideMetrics]:
    """Metrics of the leader decision and of every model version on one side."""
    rows: dict[tuple[str, int], list[tuple[int, int, float]]] = {}
    roles: dict[tuple[str, int], set[str]] = {}
    for eid in sorted(preds.keys() & outcomes.keys()):
        p, y = preds[eid], outcomes[eid]
        lead = p["leader"]
        rows.setdefault((LEADER, 0), []).append((y, int(lead["label"]), float(lead["score"])))
        roles.setdefault((LEADER, 0), set()).add("decision")
        for m in (lead, *p["challengers"]):
            key = (m["model_id"], int(m["version"]))
            rows.setdefault(key, []).append((y, int(m["label"]), float(m["score"])))
            roles.setdefault(key, set()).add(str(m["role"]))
    out = []
    for key in sorted(rows):
        ys, labels, scores = zip(*rows[key], strict=True)
        role = next(iter(roles[key])) if len(roles[key]) == 1 else "mixed"
        out.append(SideMetrics(side, namespace, key[0], key[1], role, len(ys),
                               **classification_metrics(ys, labels, scores)))  # type: ignore[arg-type]
    return out


def _features(p: Mapping[str, Any]) -> dict[str, float]:
    return {f["name"]: float(f["value"]) for f in p["features"]}


def disagreement(left: Mapping[str, Any], right: Mapping[str, Any],
                 outcome: int | None) -> Disagreement:
    """The leader-versus-leader comparison of one event."""
    lf, rf = _features(left), _features(right)
    diffs = {k: rf[k] - lf[k] for k in lf.keys() & rf.keys()
             if rf[k] != lf[k] and not (np.isnan(rf[k]) and np.isnan(lf[k]))}
    ll, rl = left["leader"], right["leader"]
    return Disagreement(
        event_id=str(left["event_id"]), entity_id=str(left["entity_id"]),
        event_time=int(left["event_time"]),
        left_model_id=ll["model_id"], left_version=int(ll["version"]),
        left_score=float(ll["score"]), left_label=int(ll["label"]),
        right_model_id=rl["model_id"], right_version=int(rl["version"]),
        right_score=float(rl["score"]), right_label=int(rl["label"]),
        abs_diff=abs(float(rl["score"]) - float(ll["score"])),
        outcome_label=outcome, features=lf, feature_diffs=dict(sorted(diffs.items())),
    )


def compare(
    left_predictions: Iterable[Mapping[str, Any]],
    right_predictions: Iterable[Mapping[str, Any]],
    left_outcomes: Mapping[str, int],
    right_outcomes: Mapping[str, int],
    *,
    left: str,
    right: str,
    top: int = 10,
    dead_letters: tuple[int | None, int | None] = (None, None),
) -> CompareReport:
    """Join both sides by event id and compute the report (see the module docstring)."""
    lp, ldup = by_event(left_predictions)
    rp, rdup = by_event(right_predictions)
    both = sorted(lp.keys() & rp.keys())
    only_l, only_r = sorted(lp.keys() - rp.keys()), sorted(rp.keys() - lp.keys())
    agree = sum(lp[e]["leader"]["label"] == rp[e]["leader"]["label"] for e in both)
    candidates = []
    for eid in both:
        d = disagreement(lp[eid], rp[eid], left_outcomes.get(eid, right_outcomes.get(eid)))
        if d.abs_diff > 0 or d.left_label != d.right_label:
            candidates.append(d)
    candidates.sort(key=lambda d: (d.left_label == d.right_label, -d.abs_diff, d.event_id))
    return CompareReport(
        left_namespace=left, right_namespace=right,
        events_left=len(lp), events_right=len(rp), events_both=len(both),
        only_left=len(only_l), only_right=len(only_r),
        duplicates_left=ldup, duplicates_right=rdup,
        leader_agreement=agree / len(both) if both else None, leader_agreements=agree,
        code_versions_left=sorted({str(p["provenance"]["code_version"]) for p in lp.values()}),
        code_versions_right=sorted({str(p["provenance"]["code_version"]) for p in rp.values()}),
        models=model_diffs(lp, rp, both),
        metrics=side_metrics("left", left, lp, left_outcomes)
        + side_metrics("right", right, rp, right_outcomes),
        disagreements=candidates[:top],
        only_left_sample=only_l[:10], only_right_sample=only_r[:10],
        dead_letters_left=dead_letters[0], dead_letters_right=dead_letters[1],
    )


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if v is not None}


def documents(report: CompareReport, computed_time: int) -> list[tuple[str, dict[str, Any]]]:
    """``{ns}-replay-compare`` documents (docs/documents.md): one ``summary``, one ``model``
    per model version, one ``metrics`` per side and model, one ``disagreement`` per listed
    event. ``_id`` = ``{compare_id}:{kind}:...``, so indexing the same run twice overwrites.

    >>> r = compare([], [], {}, {}, left="a", right="b")
    >>> [(i, d["kind"]) for i, d in documents(r, 7)]
    [('a:b:7:summary', 'summary')]
    """
    cid = f"{report.left_namespace}:{report.right_namespace}:{computed_time}"
    common = {"compare_id": cid, "left_namespace": report.left_namespace,
              "right_namespace": report.right_namespace, "computed_time": computed_time}
    docs = [(f"{cid}:summary", _clean({
        **common, "kind": "summary",
        "events_left": report.events_left, "events_right": report.events_right,
        "events_both": report.events_both, "only_left": report.only_left,
        "only_right": report.only_right, "duplicates_left": report.duplicates_left,
        "duplicates_right": report.duplicates_right,
        "dead_letters_left": report.dead_letters_left,
        "dead_letters_right": report.dead_letters_right,
        "leader_agreement": report.leader_agreement,
        "count": report.events_both, "label_agreements": report.leader_agreements,
        "left_code_version": report.code_versions_left,
        "right_code_version": report.code_versions_right,
    }))]
    for m in report.models:
        docs.append((f"{cid}:model:{m.model_id}:{m.version}", {
            **common, "kind": "model", "model_id": m.model_id, "model_version": m.version,
            "count": m.count, "equal_count": m.equal, "max_abs_diff": m.max_abs_diff,
            "mean_abs_diff": m.mean_abs_diff, "label_agreement": m.label_agreement,
        }))
    for s in report.metrics:
        docs.append((f"{cid}:metrics:{s.side}:{s.model_id}:{s.version}", _clean({
            **common, "kind": "metrics", "side": s.side, "namespace": s.namespace,
            "model_id": s.model_id, "model_version": s.version, "role": s.role,
            "n_labels": s.n_labels, "accuracy": s.accuracy, "precision": s.precision,
            "recall": s.recall, "f1": s.f1, "roc_auc": s.roc_auc,
        })))
    for rank, d in enumerate(report.disagreements, 1):
        docs.append((f"{cid}:disagreement:{d.event_id}", _clean({
            **common, "kind": "disagreement", "rank": rank, "event_id": d.event_id,
            "entity_id": d.entity_id, "event_time": d.event_time,
            "left_model_id": d.left_model_id, "left_version": d.left_version,
            "left_score": d.left_score, "left_label": d.left_label,
            "right_model_id": d.right_model_id, "right_version": d.right_version,
            "right_score": d.right_score, "right_label": d.right_label,
            "abs_diff": d.abs_diff, "outcome_label": d.outcome_label,
            "features": d.features, "feature_diffs": d.feature_diffs,
        })))
    return docs
