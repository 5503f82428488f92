"""Pipeline specs: the declarative description of one domain (events, features, models, outcomes).

A second domain is a new YAML spec plus its Avro schema, with no code change.

(Over 400 lines: one small pydantic model per block of the spec, and the spec-wide validator
that checks the blocks against each other needs all of them; a split would only scatter the
one schema of the file.)

>>> spec = load_spec(SPEC_DIR / "transactions.yaml")
>>> spec.name, spec.event.entity_field, spec.event.topic
('transactions', 'card_id', 'events.transactions')
>>> parse_duration("36h"), parse_duration("15m"), parse_duration("7d")
(129600000, 900000, 604800000)
>>> spec.event.min_event_time, spec.event.max_time_age, spec.event.max_id_bytes
(946684800000, '3650d', 256)
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from precog import resources
from precog.errors import ConfigError

#: the packaged specs (``pipelines/specs/``); a relative spec path not found is looked up here
SPEC_DIR = resources.spec_dir()
_DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(text: str | int) -> int:
    """Milliseconds in ``"500ms"``, ``"30s"``, ``"15m"``, ``"36h"``, ``"7d"`` (ints are ms)."""
    if isinstance(text, int):
        return text
    m = _DURATION.match(text.strip())
    if not m:
        raise ConfigError(f"bad duration {text!r}: use e.g. 500ms, 30s, 15m, 36h, 7d")
    return int(float(m["n"]) * _UNIT_MS[m["unit"]])


def _valid_duration(v: str) -> str:
    """``v`` if it parses as a duration; else the ValueError pydantic reports."""
    try:
        parse_duration(v)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: 2000-01-01T00:00:00Z in epoch ms: the default lower bound of event times.
MIN_EVENT_TIME_MS = 946_684_800_000


def epoch_ms(value: Any) -> int:
    """Epoch milliseconds of an int (ms), a date or datetime, or an ISO-8601 string (UTC).

    >>> epoch_ms("2000-01-01"), epoch_ms(5), epoch_ms("1970-01-01T00:00:01Z")
    (946684800000, 5, 1000)
    """
    if isinstance(value, bool):
        raise ConfigError(f"bad time {value!r}: use epoch ms or an ISO date")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ConfigError(f"bad time {value!r}: use epoch ms or an ISO date") from None
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1000)
    if isinstance(value, date):
        return epoch_ms(datetime(value.year, value.month, value.day, tzinfo=UTC))
    raise ConfigError(f"bad time {value!r}: use epoch ms or an ISO date")


class FieldCheck(_Strict):
    """Quality rule for one event field; a failing event is invalid (dead letter)."""

    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None
    pattern: str | None = None
    required: bool = True
    max_abs: float | None = Field(
        None, gt=0, description="a number's magnitude limit; default event.max_abs"
    )
    max_bytes: int | None = Field(
        None, ge=1, description="a string's UTF-8 (or bytes) length limit;"
        " default event.max_id_bytes or event.max_string_bytes"
    )


class EventSpec(_Strict):
    """The input events: schema, topic and the fields with a special meaning."""

    schema_name: str = Field(description="short name of the .avsc (schemas/, PRECOG_SCHEMA_DIRS or"
                             " the spec's schema_dirs), e.g. transaction")
    topic: str = Field(description="topic suffix; the full name is {ns}.<topic>")
    id_field: str
    entity_field: str
    time_field: str = Field(description="event time, epoch milliseconds")
    max_time_skew: str = Field("1d", description="events further in the future are invalid")
    min_event_time: int = Field(
        MIN_EVENT_TIME_MS,
        description="earlier event times are invalid: epoch ms or an ISO date (2000-01-01)",
    )
    max_time_age: str | None = Field(
        "3650d", description="events older than this before now are invalid (null: no limit)"
    )
    max_abs: float = Field(
        1e15, gt=0, description="a number of larger magnitude is invalid (it would overflow"
        " sums and products); per field: checks.<field>.max_abs",
    )
    max_id_bytes: int = Field(
        256, ge=1, description="UTF-8 length limit of the id, the entity and every field kept"
        " in entity state (novelty features)",
    )
    max_string_bytes: int = Field(
        1024, ge=1, description="UTF-8 length limit of any other string or bytes field"
    )
    checks: dict[str, FieldCheck] = {}

    @field_validator("min_event_time", mode="before")
    @classmethod
    def _time_in_ms(cls, v: Any) -> int:
        try:
            return epoch_ms(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("max_time_skew", "max_time_age")
    @classmethod
    def _is_duration(cls, v: str | None) -> str | None:
        return v if v is None else _valid_duration(v)


class _Feature(_Strict):
    name: str


class ValueFeature(_Feature):
    """The numeric field as it is."""

    kind: Literal["value"]
    field: str


class Log1pFeature(_Feature):
    """``log(1 + field)`` of a non-negative numeric field."""

    kind: Literal["log1p"]
    field: str


class EqualsFeature(_Feature):
    """1.0 when the field equals ``value``, else 0.0."""

    kind: Literal["equals"]
    field: str
    value: str


class HourOfDayFeature(_Feature):
    """Hour of the event time in UTC, 0..23."""

    kind: Literal["hour_of_day"]


class DecayedCountFeature(_Feature):
    """Exponentially decayed count of the entity's earlier events (half-life ``horizon``)."""

    kind: Literal["decayed_count"]
    horizon: str


class DecayedSumFeature(_Feature):
    """Exponentially decayed sum of a field over the entity's earlier events."""

    kind: Literal["decayed_sum"]
    field: str
    horizon: str


class TimeSinceLastFeature(_Feature):
    """Seconds since the entity's previous event (a large constant for the first)."""

    kind: Literal["time_since_last"]


class RatioToMeanFeature(_Feature):
    """Field divided by the entity's decayed mean of it (1.0 without history)."""

    kind: Literal["ratio_to_mean"]
    field: str
    horizon: str


class NoveltyFeature(_Feature):
    """1.0 when the field's value is not among the entity's last ``capacity`` values."""

    kind: Literal["novelty"]
    field: str
    capacity: int = Field(20, ge=1, le=1000)


FeatureSpec = Annotated[
    ValueFeature
    | Log1pFeature
    | EqualsFeature
    | HourOfDayFeature
    | DecayedCountFeature
    | DecayedSumFeature
    | TimeSinceLastFeature
    | RatioToMeanFeature
    | NoveltyFeature,
    Field(discriminator="kind"),
]


class ModelSpec(_Strict):
    """A model the training pipeline builds for this spec."""

    model_id: str
    algorithm: Literal["lightgbm", "sklearn-logistic", "sklearn-hgb", "sklearn-random-forest"]
    features: list[str] | Literal["all"] = "all"
    role: Literal["leader", "challenger"] = "challenger"
    params: dict[str, float | int | str | bool] = {}
    target_precision: float | None = Field(
        None, gt=0, lt=1, description="threshold: highest recall with at least this precision"
    )


class OutcomeSpec(_Strict):
    """Delayed labels and how they join to predictions."""

    schema_name: str = "outcome"
    topic: str = "outcomes"
    join_key: str = "event_id"
    label_field: str = "label"
    label_window: str = "7d"


class VolumeSpec(_Strict):
    """Data-pipeline volume monitoring."""

    window: str = "1m"
    min_ratio: float = Field(0.8, gt=0, le=1, description="received/expected below this alerts")


class BusinessSpec(_Strict):
    """What the business view calls the domain's events, positives and money.

    The defaults are neutral; a domain with a money-like feature names it in
    ``amount_feature`` and gets the amount panels of the business dashboard.
    """

    amount_feature: str | None = Field(
        None, description="feature whose value is the predictions documents' `amount` (the"
        " business amount the dashboards sum); null: no amount"
    )
    event_noun: str = Field("events", min_length=1,
                            description="plural noun for the events, e.g. transactions")
    positive_noun: str = Field("positives", min_length=1,
                               description="what a positive outcome is called, e.g. fraud")
    positive_decision: str = Field("flagged", min_length=1,
                                   description="what a leader decision of 1 is called, e.g."
                                   " declined")
    negative_decision: str = Field("passed", min_length=1,
                                   description="what a leader decision of 0 is called, e.g."
                                   " approved")


class SimulationSpec(_Strict):
    """How ``precog simulate`` makes this domain's events (precog.simulate)."""

    simulator: str | None = Field(
        None, description="the seeded simulator whose events fit this spec's schema"
        " (transactions, sensors); null: the domain brings its own history"
    )
    outcome_source: str = Field("simulator", min_length=1,
                                description="the `source` of the outcomes it writes")
    history_days: float = Field(30.0, gt=0, description="default span of a history")
    data_drift_feature: str | None = Field(
        None, description="the field --data-drift-at shifts unless told otherwise"
    )


class PromotionSpec(_Strict):
    """How the leader is chosen: by a person (``manual``) or by recent paired evidence.

    ``best-recent``: every ``interval``, leader and challengers are ranked on ``metric``
    over the joined labels of the last ``window``; a challenger is promoted only when it
    beats the leader on the same events by more than ``margin``, supported by ``test`` at
    level ``alpha``, on at least ``min_labels`` events, no sooner than ``cooldown`` after
    the last change, and only if it passes its health checks (docs/lifecycle.md).
    """

    policy: Literal["manual", "best-recent"] = "manual"
    metric: Literal["f1", "precision_at_recall", "roc_auc", "log_loss", "cost"] = "f1"
    recall: float = Field(0.8, gt=0, le=1, description="precision_at_recall: the recall")
    cost_fp: float = Field(1.0, ge=0, description="cost: of a false positive")
    cost_fn: float = Field(10.0, ge=0, description="cost: of a false negative")
    window: str = Field("7d", description="joined labels of this last span are the evidence")
    interval: str = Field("1h", description="how often the policy is evaluated")
    min_labels: int = Field(500, ge=10, description="fewer paired labelled events: no change")
    margin: float = Field(0.0, ge=0, description="the gain a challenger must exceed")
    test: Literal["bootstrap", "mcnemar"] = "bootstrap"
    alpha: float = Field(0.05, gt=0, lt=0.5, description="level of the test")
    bootstrap_samples: int = Field(1000, ge=100, le=100_000)
    cooldown: str = Field("1d", description="no promotion sooner than this after a change")
    min_coverage: float = Field(
        0.95, gt=0, le=1,
        description="health: a challenger must have scored this share of the leader's"
        " labelled events in the window",
    )

    @field_validator("window", "interval", "cooldown")
    @classmethod
    def _is_duration(cls, v: str) -> str:
        return _valid_duration(v)


class RetrainingSpec(_Strict):
    """When ``precog retrain watch`` retrains the spec's models on its own topics.

    Each trigger in ``triggers`` fires at most once per ``cooldown``: ``schedule`` every
    ``schedule``; ``concept_drift`` on a concept-drift alert of the leader;
    ``data_drift`` on a data-drift alert of one of ``data_drift_features`` (any feature when
    empty); ``performance`` when the leader's newest ``last_<T>`` F1 is below ``min_f1``
    on at least ``min_labels`` labels; ``estimated_performance`` when the F1 estimated from
    the leader's scores alone (``estimated_<T>``, before any label) of a window is below
    ``min_estimated_f1`` on at least ``min_labels`` predictions (docs/lifecycle.md).
    """

    triggers: list[Literal["schedule", "concept_drift", "data_drift", "performance",
                           "estimated_performance"]] = []
    schedule: str = Field("7d", description="the schedule trigger's period")
    window: str = Field("14d", description="the data window of a run, back from its start")
    recent: str = Field("1d", description="the new versions are also evaluated on the"
                        " leader's labels joined in this span before the run")
    data_drift_features: list[str] = []
    min_f1: float = Field(0.0, ge=0, le=1)
    min_estimated_f1: float = Field(0.0, ge=0, le=1, description="the estimated_performance"
                                    " trigger's threshold")
    min_labels: int = Field(200, ge=1)
    cooldown: str = Field("1d", description="no run sooner than this after the last")
    max_challengers: int = Field(3, ge=1, description="a run that would exceed it is skipped")

    @field_validator("schedule", "window", "recent", "cooldown")
    @classmethod
    def _is_duration(cls, v: str) -> str:
        return _valid_duration(v)


class TrafficArmSpec(_Strict):
    """One arm of an ``ab`` split: its name, the model that decides for it, its weight."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", description="arm name in predictions")
    model: str = Field(description="a model_id of the spec: the version of it that scores"
                       " (leader or newest challenger) decides for the arm")
    weight: float = Field(gt=0, description="relative weight (normalised to 10,000 buckets)")


class TrafficSpec(_Strict):
    """Whose decision is served for each event: ``shadow``, ``canary`` or ``ab``.

    ``shadow``: the leader decides; challengers only score. ``canary``: ``candidate`` (a
    challenger; default: the newest challenger) decides for ``steps[i]`` percent of the
    entities, chosen by a keyed hash of the entity id (``salt``); every ``interval`` the
    canary steps up when it has ``min_labels`` labels in its arm since the last step and
    is not worse than the leader by more than ``max_drop`` (``metric``) nor
    ``max_error_increase`` (error rate), is rolled back when it is worse by more than
    either bound (from ``rollback_min_labels`` labels on), and at 100% is promoted to
    leader. ``ab``: the ``arms`` with their weights (docs/lifecycle.md "Traffic").
    """

    policy: Literal["shadow", "canary", "ab"] = "shadow"
    salt: str = Field("", max_length=64, description="key of the entity hash; another salt"
                      " reshuffles the entities among the arms")
    candidate: str | None = Field(None, description="canary: the model_id of the candidate"
                                  " (its newest challenger version); null: the newest challenger")
    steps: list[float] = Field([5.0, 25.0, 100.0], description="canary: percent of the"
                               " entities the candidate decides for, step by step; the last"
                               " is 100 (promotion)")
    metric: Literal["f1", "precision_at_recall", "roc_auc", "log_loss", "cost"] = "f1"
    min_labels: int = Field(200, ge=1, description="canary: labels in its arm before a step up")
    rollback_min_labels: int = Field(50, ge=1, description="canary: labels in its arm before"
                                     " a rollback can be decided")
    max_drop: float = Field(0.05, ge=0, description="canary: rolled back when its metric is"
                            " worse than the leader's on the arm's events by more than this")
    max_error_increase: float = Field(0.02, ge=0, description="canary: rolled back when its"
                                      " error rate exceeds the leader's by more than this")
    interval: str = Field("1h", description="how often the canary is evaluated")
    arms: list[TrafficArmSpec] = Field([], description="ab: the arms, in bucket order")

    @field_validator("interval")
    @classmethod
    def _is_duration(cls, v: str) -> str:
        return _valid_duration(v)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[float]) -> list[float]:
        if not v or any(not 0 < s <= 100 for s in v) or any(
                b <= a for a, b in zip(v, v[1:], strict=False)) or v[-1] != 100:
            raise ValueError(f"traffic.steps must increase within (0, 100] and end at 100,"
                             f" got {v}")
        return v

    @model_validator(mode="after")
    def _arms(self) -> TrafficSpec:
        if self.policy == "ab":
            if len(self.arms) < 2:
                raise ValueError("traffic.arms: an ab policy needs at least two arms")
            names = [a.name for a in self.arms]
            if len(set(names)) != len(names):
                raise ValueError(f"traffic.arms: arm names must be distinct, got {names}")
        elif self.arms:
            raise ValueError(f"traffic.arms is only for policy ab, not {self.policy}")
        return self


class PipelineSpec(_Strict):
    """One domain, end to end."""

    name: str
    description: str = ""
    event: EventSpec
    features: list[FeatureSpec]
    models: list[ModelSpec]
    outcome: OutcomeSpec = OutcomeSpec()
    volume: VolumeSpec = VolumeSpec()
    business: BusinessSpec = BusinessSpec()
    simulation: SimulationSpec = SimulationSpec()
    promotion: PromotionSpec = PromotionSpec()
    retraining: RetrainingSpec = RetrainingSpec()
    traffic: TrafficSpec = TrafficSpec()
    schema_dirs: list[Path] = Field(
        default_factory=list,
        description="directories of this domain's .avsc files, relative to the spec file;"
        " searched after the packaged schemas and PRECOG_SCHEMA_DIRS (precog.resources)",
    )

    @field_validator("name")
    @classmethod
    def _name_is_safe(cls, v: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_-]*", v):
            raise ValueError("spec name must be lowercase letters, digits, '-' or '_'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> PipelineSpec:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        for m in self.models:
            if m.features != "all":
                unknown = set(m.features) - set(names)
                if unknown:
                    raise ValueError(f"model {m.model_id} uses unknown features {sorted(unknown)}")
        amount = self.business.amount_feature
        if amount is not None and amount not in names:
            raise ValueError(f"business.amount_feature {amount!r} is not a feature")
        unknown_drift = set(self.retraining.data_drift_features) - set(names)
        if unknown_drift:
            raise ValueError(f"retraining.data_drift_features {sorted(unknown_drift)} are not"
                             " features")
        model_ids = {m.model_id for m in self.models}
        for a in self.traffic.arms:
            if a.model not in model_ids:
                raise ValueError(f"traffic.arms: arm {a.name} names unknown model {a.model!r}")
        if self.traffic.candidate is not None and self.traffic.candidate not in model_ids:
            raise ValueError(f"traffic.candidate {self.traffic.candidate!r} is not a model of"
                             " the spec")
        leaders = [m for m in self.models if m.role == "leader"]
        if len(leaders) != 1:
            raise ValueError("exactly one model must have role: leader")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def model_features(self, model: ModelSpec) -> list[str]:
        """The feature names a model uses, in the spec's order."""
        if model.features == "all":
            return self.feature_names
        wanted = set(model.features)
        return [n for n in self.feature_names if n in wanted]

    def model(self, model_id: str) -> ModelSpec:
        for m in self.models:
            if m.model_id == model_id:
                return m
        raise ConfigError(f"spec {self.name} has no model {model_id!r}")


def spec_problem(exc: ValidationError) -> str:
    """The first problem of a spec's validation: where (a dotted path) and what, without
    pydantic's input echo and help link; how many more there are.

    >>> try:
    ...     PipelineSpec.model_validate({"name": "x"})
    ... except ValidationError as exc:
    ...     print(spec_problem(exc))
    event: Field required (and 2 more problems)
    """
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    what = str(first["msg"]).removeprefix("Value error, ")
    more = len(errors) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {what}{tail}" if where else f"{what}{tail}"


def load_spec(path: Path | str) -> PipelineSpec:
    """Read and validate a YAML pipeline spec; errors name the file and the field.

    The spec's ``schema_dirs`` are resolved against the spec file and searched for schemas
    from then on (:func:`precog.resources.add_schema_dirs`).
    """
    p = Path(path)
    if not p.exists() and not p.is_absolute() and (SPEC_DIR / p.name).exists():
        p = SPEC_DIR / p.name
    if p.is_dir():
        raise ConfigError(f"pipeline spec {p}: is a directory, not a YAML file")
    try:
        data = yaml.safe_load(p.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"pipeline spec not found: {p}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"pipeline spec {p}: not UTF-8 text (byte {exc.start}: "
                          f"{exc.reason})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{p}: invalid pipeline spec: {spec_problem(exc)}") from None
    if not spec.schema_dirs:
        return spec
    dirs = [d if d.is_absolute() else (p.parent / d).resolve() for d in spec.schema_dirs]
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing:
        raise ConfigError(f"{p}: schema_dirs not found: {', '.join(missing)}")
    resources.add_schema_dirs(dirs)
    return spec.model_copy(update={"schema_dirs": dirs})
