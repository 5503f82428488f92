"""Unit tests of the event simulator: determinism, fraud rate, learnability, garbage, drift."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from precog.avro import Codec
from precog.errors import ConfigError, DecodeError
from precog.features import Featurizer, build_training_frame
from precog.simulate import (
    DAY,
    SensorSimulator,
    SimConfig,
    TransactionSimulator,
    read_history,
    simulator_for,
    write_history,
)
from precog.spec import SPEC_DIR, load_spec, parse_duration
from precog.validation import check_event

pytestmark = pytest.mark.unit

TX = load_spec(SPEC_DIR / "transactions.yaml")
SENSORS = load_spec(SPEC_DIR / "sensors.yaml")
#: a month of 20k events, as ``precog simulate history`` would spread them
MONTH = 30 * DAY / 20_000


def run(n: int, **kw) -> list:
    return list(simulator_for(SimConfig(**kw)).events(n))


def test_same_seed_same_events_other_seed_other_events() -> None:
    a, b = run(2000, seed=5), run(2000, seed=5)
    assert [(e.record, e.label, e.outcome_time) for e in a] == [
        (e.record, e.label, e.outcome_time) for e in b
    ]
    c = run(2000, seed=6)
    assert [e.record["card_id"] for e in a] != [e.record["card_id"] for e in c]
    assert len({e.record["event_id"] for e in a}) == 2000
    times = [e.record["event_time"] for e in a]
    assert times == sorted(times)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fraud_rate_is_near_the_configured_rate(seed: int) -> None:
    events = run(20_000, seed=seed, mean_interarrival_ms=MONTH)
    rate = sum(e.label for e in events) / len(events)
    assert 0.015 <= rate <= 0.025, rate


def test_fraud_is_learnable_on_a_time_holdout() -> None:
    """Seed 42, 20k events, last 30% held out: HistGradientBoosting AUC 0.9922 seen."""
    events = run(20_000, seed=42, mean_interarrival_ms=MONTH)
    labels = {e.record["event_id"]: e.label for e in events}
    frame = build_training_frame(TX, [e.record for e in events])
    y = np.array([labels[i] for i in frame.event_ids])
    cut = int(0.7 * len(y))
    model = HistGradientBoostingClassifier(random_state=0).fit(frame.X[:cut], y[:cut])
    auc = roc_auc_score(y[cut:], model.predict_proba(frame.X[cut:])[:, 1])
    assert auc > 0.8, auc


def test_fraud_looks_like_fraud() -> None:
    events = run(20_000, seed=4, mean_interarrival_ms=MONTH)
    fraud = [e.record for e in events if e.label == 1]
    legit = [e.record for e in events if e.label == 0]

    def share(rows: list, pred) -> float:
        return sum(map(pred, rows)) / len(rows)

    assert share(fraud, lambda r: r["channel"] == "online") > 0.6
    assert share(legit, lambda r: r["channel"] == "online") < 0.35
    assert statistics.median(r["amount"] for r in fraud) > 3 * statistics.median(
        r["amount"] for r in legit
    )


def test_every_valid_record_passes_and_every_garbage_fails() -> None:
    events = run(6000, seed=9, garbage_fraction=0.1, mean_interarrival_ms=MONTH)
    codec = Codec.for_schema("transaction")
    now = events[-1].record["event_time"]
    kinds: dict[str, int] = {}
    for e in events:
        if e.garbage is None:
            assert check_event(TX, e.record, now) == [], e.record
            assert codec.decode(codec.encode(e.record)) == e.record
            assert e.label in (0, 1) and e.outcome_time > e.record["event_time"]
            continue
        kinds[e.garbage_kind] = kinds.get(e.garbage_kind, 0) + 1
        assert e.label is None and e.outcome_time is None
        if e.garbage_kind == "impossible":
            assert codec.decode(e.garbage) == e.record
            assert check_event(TX, e.record, now) != []
        else:
            with pytest.raises(DecodeError):
                codec.decode(e.garbage)
    assert set(kinds) == {"malformed", "wrong_schema", "impossible"}
    assert 500 <= sum(kinds.values()) <= 700  # 10% of 6000


def test_garbage_replaces_events_without_changing_the_others() -> None:
    clean = run(3000, seed=3)
    dirty = run(3000, seed=3, garbage_fraction=0.2)
    for a, b in zip(clean, dirty, strict=True):
        if b.garbage is None:
            assert (a.record, a.label, a.outcome_time) == (b.record, b.label, b.outcome_time)


def test_outcome_delays_are_lognormal_days_and_some_miss_the_window() -> None:
    events = run(20_000, seed=8)
    delays = [e.outcome_time - e.record["event_time"] for e in events]
    assert 2.8 * DAY < statistics.median(delays) < 3.2 * DAY
    late = sum(d > parse_duration(TX.outcome.label_window) for d in delays) / len(delays)
    assert 0.02 < late < 0.08


def test_concept_drift_changes_the_fraud_pattern_after_the_index() -> None:
    events = run(30_000, seed=2, concept_drift_at=15_000, mean_interarrival_ms=MONTH)
    before = [e.record for e in events[:15_000] if e.label == 1]
    after = [e.record for e in events[15_000:] if e.label == 1]
    assert sum(r["channel"] == "online" for r in before) / len(before) > 0.6
    assert {r["channel"] for r in after} == {"pos"}
    baseline = run(30_000, seed=2, mean_interarrival_ms=MONTH)
    assert [e.record for e in baseline[:15_000]] == [e.record for e in events[:15_000]]


@pytest.mark.parametrize("feature", ["amount", "country", "channel"])
def test_data_drift_shifts_the_named_input_after_the_index(feature: str) -> None:
    base = run(10_000, seed=6)
    drift = run(10_000, seed=6, data_drift_at=5000, data_drift_feature=feature)
    assert [e.record for e in base[:5000]] == [e.record for e in drift[:5000]]

    def stat(events: list) -> float:
        legit = [e.record for e in events if e.label == 0]
        if feature == "amount":
            return statistics.median(r["amount"] for r in legit)
        if feature == "country":  # share abroad: not the card's usual country
            homes: dict[str, str] = {}
            for e in base[:5000]:
                homes.setdefault(e.record["card_id"], e.record["country"])
            known = [r for r in legit if r["card_id"] in homes]
            return sum(r["country"] != homes[r["card_id"]] for r in known) / len(known)
        return sum(r["channel"] == "online" for r in legit) / len(legit)

    before, after = stat(base[5000:]), stat(drift[5000:])
    assert after > 1.8 * before, (before, after)


def test_data_drift_of_an_unknown_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="choose one of amount, country, channel"):
        TransactionSimulator(SimConfig(data_drift_at=1, data_drift_feature="hour"))


def test_volume_drop_removes_the_fraction_only_inside_the_window() -> None:
    events = run(10_000, seed=1, volume_drop_at=4000, volume_drop_len=2000, volume_drop=0.3)
    dropped = [e.index for e in events if e.dropped]
    assert all(4000 <= i < 6000 for i in dropped)
    assert 540 <= len(dropped) <= 660  # 30% of 2000
    assert all(e.outcome_time is None for e in events if e.dropped)


def test_bad_config_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        SimConfig(garbage_fraction=1.5)
    with pytest.raises(ConfigError, match="no simulator named 'weather'"):
        simulator_for(SimConfig(simulator="weather"))
    with pytest.raises(ConfigError, match="at least one entity"):
        SimConfig(entities=0)


def test_history_round_trip(tmp_path) -> None:
    end = 1_750_000_000_000
    summary = write_history(tmp_path, 3000, seed=4, end_ms=end, progress=False)
    events, outcomes = read_history(tmp_path)
    assert len(events) == summary.events == 3000
    assert len(outcomes) == summary.outcomes == 3000 - summary.outcomes_pending
    assert summary.outcomes_pending > 0
    assert end - DAY < events[-1]["event_time"] <= end
    assert all(o["outcome_time"] <= end for o in outcomes)
    ids = {e["event_id"] for e in events}
    assert {o["event_id"] for o in outcomes} <= ids
    known_positive = sum(o["label"] for o in outcomes)
    assert 0 < known_positive <= summary.positives
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["events"] == 3000 and manifest["seed"] == 4
    assert manifest["first_event_time"] == events[0]["event_time"]
    again = write_history(tmp_path / "again", 3000, seed=4, end_ms=end, progress=False)
    assert read_history(tmp_path / "again")[0] == events and again.positives == summary.positives


def test_sensors_spec_loads_featurizes_and_is_learnable() -> None:
    assert SENSORS.event.entity_field == "sensor_id" and SENSORS.event.topic == "events.sensors"
    assert [m.algorithm for m in SENSORS.models] == ["lightgbm", "sklearn-logistic"]
    sim = SensorSimulator(SimConfig(seed=42,
                                    mean_interarrival_ms=7 * DAY / 20_000))
    events = list(sim.events(20_000))
    now = events[-1].record["event_time"]
    assert all(check_event(SENSORS, e.record, now) == [] for e in events)
    fz = Featurizer(SENSORS)
    vec, state = fz.featurize(None, events[0].record)
    assert len(vec.values) == len(fz.names) == 10 and state.last_time == events[0].record[
        "event_time"]
    labels = {e.record["event_id"]: e.label for e in events}
    frame = build_training_frame(SENSORS, [e.record for e in events])
    y = np.array([labels[i] for i in frame.event_ids])
    assert 0.01 < y.mean() < 0.03
    cut = int(0.7 * len(y))
    model = HistGradientBoostingClassifier(random_state=0).fit(frame.X[:cut], y[:cut])
    assert roc_auc_score(y[cut:], model.predict_proba(frame.X[cut:])[:, 1]) > 0.9  # 0.9992


def test_sensor_garbage_fails() -> None:
    sim = SensorSimulator(SimConfig(seed=3, garbage_fraction=0.3,
                                    garbage_kinds=("impossible",)))
    bad = [e for e in sim.events(500) if e.garbage is not None]
    assert len(bad) > 100
    assert all(check_event(SENSORS, e.record, e.record["event_time"]) for e in bad)


def test_cli_history_writes_files(tmp_path) -> None:
    from precog.cli import app

    result = CliRunner().invoke(app, ["simulate", "history", "--out", str(tmp_path),
                                      "--events", "500", "--seed", "3", "--end",
                                      "2025-01-01T00:00:00", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "wrote 500 events" in result.output
    assert (tmp_path / "events.avro").exists() and (tmp_path / "outcomes.avro").exists()
    events, _ = read_history(tmp_path)
    assert events[-1]["event_time"] <= 1_735_689_600_000



def test_cli_history_takes_the_simulator_and_its_words_from_the_spec(tmp_path) -> None:
    """``--spec`` picks the simulator; ``--entities`` sizes its world whatever the domain;
    the progress line (captured output, so plain lines) ends with the whole count."""
    from precog.cli import app

    result = CliRunner().invoke(app, [
        "simulate", "history", "--out", str(tmp_path), "--events", "300", "--seed", "3",
        "--end", "2025-01-01T00:00:00", "--spec", str(SPEC_DIR / "sensors.yaml"),
        "--entities", "5", "--positive-rate", "0.03"])
    assert result.exit_code == 0, result.output
    assert "history sensors: 300/300 (100%)" in result.output
    assert "wrote 300 events" in result.output
    events, outcomes = read_history(tmp_path)
    assert {e["sensor_id"] for e in events} <= {f"sensor-{j:05d}" for j in range(5)}
    assert {o["source"] for o in outcomes} == {SENSORS.simulation.outcome_source}
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert (manifest["spec"], manifest["simulator"], manifest["config"]["entities"],
            manifest["config"]["positive_rate"]) == ("sensors", "sensors", 5, 0.03)
    same = run(50, seed=3, simulator="sensors", entities=5)
    assert [e.record["sensor_id"] for e in same] == [
        e.record["sensor_id"] for e in simulator_for(SimConfig(seed=3, entities=5),
                                                     SENSORS).events(50)]


def test_a_spec_that_names_no_simulator_is_one_line_before_anything_is_written(
        tmp_path) -> None:
    from precog.cli import app

    own = tmp_path / "own.yaml"
    own.write_text((SPEC_DIR / "transactions.yaml").read_text().replace(
        "name: transactions", "name: own").replace("simulator: transactions", "simulator: null"))
    result = CliRunner().invoke(app, ["simulate", "history", "--out", str(tmp_path / "h"),
                                      "--spec", str(own), "--no-progress"])
    assert isinstance(result.exception, ConfigError)
    assert str(result.exception).startswith("spec own names no simulator")
    assert not (tmp_path / "h").exists()
