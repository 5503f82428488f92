"""The shared setup of a benchmark run: sizes, trained models, events, fresh namespaces."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from precog import resources
from precog.bench import io as bio
from precog.bench.cpu import CpuSampler, stack_pids, window_usage
from precog.settings import Settings

REPO = resources.project_root()
SECTIONS = ("throughput", "latency", "memory", "scaling", "outcome", "core", "batch",
            "mlserver", "profile")


#: ``--quick``: the events/s the latency section's 25/50/75% are taken of (``--max-rate``
#: overrides)
QUICK_LATENCY_MAX_RATE = 4_000.0
#: the latency section's offered rates, as fractions of the maximum (``--fractions``)
LATENCY_FRACTIONS = (0.25, 0.5, 0.75)


def latency_fractions(text: str) -> tuple[float, ...]:
    """``--fractions``: comma-separated fractions of the maximum in (0, 1], sorted, each once.

    >>> latency_fractions("0.3, 0.1,0.2,0.1")
    (0.1, 0.2, 0.3)
    >>> latency_fractions("0.5,2")
    Traceback (most recent call last):
    ...
    ValueError: --fractions takes fractions of the maximum rate in (0, 1], e.g. 0.1,0.2,0.3; got '2'
    """
    out = set()
    for part in (p.strip() for p in text.split(",")):
        try:
            f = float(part)
        except ValueError:
            f = float("nan")
        if not 0 < f <= 1:  # also NaN
            raise ValueError("--fractions takes fractions of the maximum rate in (0, 1], e.g."
                             f" 0.1,0.2,0.3; got {part!r}")
        out.add(f)
    return tuple(sorted(out))


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one benchmark run (``quick_config()`` for the smoke test)."""

    events: int = 50_000  # per throughput run of precog, passthrough, raw
    naive_events: int = 5_000
    naive_index_events: int = 1_500
    memory_events: int = 1_000_000
    scaling_events: int = 30_000
    challenger_events: int = 20_000
    outcome_labels: int = 20_000
    profile_events: int = 30_000
    batch_events: int = 200_000  # precog score-batch in process (precog/bench/batch.py)
    #: the world of the throughput section's "many entities" run: the other runs' events come
    #: from the simulator's default (about 2,000 cards), whose batches of 2,000 events hold
    #: about 1,100 entities; a deployment's cards are more, and each costs a state read,
    #: featurizer set-up and write
    many_entities: int = 100_000
    reps: int = 3
    latency_seconds: float = 15.0
    latency_warmup: float = 3.0
    latency_max_rate: float = 0.0  # 0: the throughput section's precog median
    latency_fractions: tuple[float, ...] = LATENCY_FRACTIONS
    history_events: int = 12_000
    quick: bool = False
    sections: tuple[str, ...] = SECTIONS

    @classmethod
    def quick_config(cls, **overrides: Any) -> BenchConfig:
        # the latency rates of a fixed maximum: a quick throughput run of a few thousand
        # events can be one batch, whose records are stamped within milliseconds of each
        # other (a "rate" of 375,000 events/s was seen), and offering a quarter of that
        # measures nothing
        base = cls(events=3_000, naive_events=600, naive_index_events=200,
                   memory_events=15_000, scaling_events=3_000, challenger_events=2_000,
                   outcome_labels=2_000, profile_events=3_000, batch_events=5_000, reps=1,
                   latency_seconds=3.0, latency_max_rate=QUICK_LATENCY_MAX_RATE,
                   latency_warmup=1.0, history_events=4_000, quick=True)
        return replace(base, **overrides)


def record_rate(timestamps: Sequence[int]) -> float:
    """Records per second between the first and the last record timestamp (ms)."""
    span = (max(timestamps) - min(timestamps)) / 1000.0
    return (len(timestamps) - 1) / span if span > 0 else float("nan")


class Lab:
    """Shared setup of one benchmark run: trained models, events, fresh namespaces."""

    def __init__(self, config: BenchConfig, out_dir: Path, echo: Callable[[str], None]) -> None:
        from precog.spec import load_spec

        self.config = config
        self.echo = echo
        self.base = Settings()
        spec_path = self.base.spec if self.base.spec.is_absolute() else REPO / self.base.spec
        self.spec = load_spec(spec_path)
        self.work = Path(tempfile.mkdtemp(prefix="work-", dir=out_dir))
        self.logs = self.work / "logs"
        self.template = Settings(namespace="bench", spec=spec_path,
                                 registry_dir=self.work / "registry")
        self.pool: list[tuple[bytes, bytes, bytes]] = []
        self.many_pool: list[tuple[bytes, bytes, bytes]] = []  # of config.many_entities
        self.many_distinct = 0  # the entities of many_pool's events
        self.models: dict[str, list[int]] = {}
        self._live: list[Settings] = []

    # -- setup ---------------------------------------------------------------------
    def prepare(self) -> None:
        """Train the spec's models, register extra challenger copies, generate events."""
        from precog.pipelines.train import train
        from precog.registry import ModelRegistry
        from precog.simulate import write_history

        cfg = self.config
        started = time.monotonic()
        write_history(self.work / "history", cfg.history_events, seed=1, progress=False,
                      spec=self.spec)
        metas = train(self.template, self.spec, self.work / "history", index=False, roles=False)
        registry = ModelRegistry(self.template.registry_dir)
        for meta in metas:  # two more versions of each model: the 2- and 4-challenger sets
            fields = meta.model_dump(exclude={"model_id", "version", "algorithm",
                                              "artifact_format", "artifact_path",
                                              "artifact_sha256", "created_time"})
            data = registry.artifact_file(meta).read_bytes()
            for _ in range(2):
                registry.register(meta.model_id, meta.algorithm, data, **fields)
        self.models = {m: registry.versions(m) for m in registry.model_ids()}
        self.echo(f"trained {', '.join(sorted(self.models))} in "
                  f"{time.monotonic() - started:.0f}s")
        need = max(cfg.events, cfg.memory_events if "memory" in cfg.sections else 0,
                   cfg.scaling_events, cfg.challenger_events, cfg.profile_events,
                   cfg.batch_events if "batch" in cfg.sections else 0, 50_000,
                   # the latency rates: each fraction of the maximum, latency_seconds each
                   int(sum(cfg.latency_fractions) * cfg.latency_max_rate
                       * cfg.latency_seconds) + 1)
        self.pool = generate_events(self.spec, need)
        self.echo(f"generated {len(self.pool)} events")
        if "throughput" in cfg.sections:
            self.many_pool = generate_events(self.spec, cfg.events, entities=cfg.many_entities)
            self.many_distinct = len({k for k, _, _ in self.many_pool})
            self.echo(f"generated {len(self.many_pool)} events of {cfg.many_entities:,} entities"
                      f" ({self.many_distinct:,} distinct)")

    def ensure_pool(self, n: int) -> None:
        """At least ``n`` events in the pool; a longer pool starts with the same events (one
        seed), so the sections measured before it grew saw a prefix of it."""
        if len(self.pool) < n:
            self.pool = generate_events(self.spec, n)
            self.echo(f"generated {len(self.pool)} events")

    def leader(self) -> str:
        return next(m.model_id for m in self.spec.models if m.role == "leader")

    def roles(self, challengers: int) -> Any:
        """Roles with the spec's leader and ``challengers`` challengers (1, 2 or 4)."""
        from precog.roles import ModelRef, initial_roles

        leader = self.leader()
        other = next(m for m in sorted(self.models) if m != leader)
        pool = [ModelRef(other, 1), ModelRef(leader, 2), ModelRef(other, 2), ModelRef(leader, 3)]
        return initial_roles(self.spec.name, ModelRef(leader, 1), pool[:challengers],
                             at=bio.now_ms(), by="bench")

    def namespace(self, challengers: int = 1) -> Settings:
        """A fresh namespace with topics, templates and roles published."""
        from precog.namespace import setup_namespace
        from precog.services.model_control import publish_roles

        s = self.template.model_copy(update={"namespace": "bench" + uuid.uuid4().hex[:8]})
        setup_namespace(s, self.spec)
        self._live.append(s)
        publish_roles(s, self.roles(challengers))
        return s

    def drop(self, s: Settings) -> None:
        from precog.namespace import drop_namespace

        try:
            drop_namespace(s)
        finally:
            self._live.remove(s)

    def close(self) -> None:
        for s in list(self._live):
            try:
                self.drop(s)
            except Exception as exc:  # cleanup must not hide the run's own error
                self.echo(f"cleanup of {s.namespace} failed: {exc}")

    def source(self, s: Settings) -> str:
        return s.topic(self.spec.event.topic)

    def events(self, n: int, kind: str = "") -> list[tuple[bytes, bytes]]:
        """The first ``n`` events of the pool (of the many-entities pool for ``precog_many``)."""
        pool = self.many_pool if kind == "precog_many" else self.pool
        if len(pool) < n:
            raise ValueError(f"{kind or 'the'} pool holds {len(pool)} events, not {n}")
        return [(k, v) for k, v, _ in pool[:n]]

    # -- one throughput run --------------------------------------------------------
    def throughput_run(self, kind: str, n: int, challengers: int = 1) -> dict[str, Any]:
        """Pre-produce ``n`` events, start the process, time first to n-th output record;
        ``cpu``: the cores each process used in that window (:mod:`precog.bench.cpu`)."""
        s = self.namespace(challengers)
        try:
            bio.produce_all(s, self.source(s), self.events(n, kind))
            if kind == "raw":
                bio.raw_passthrough(s, self.source(s), s.topic("predictions"), n)
                return {"events_per_s": record_rate(bio.record_timestamps(s, s.topic("predictions"),
                                                                    n))}
            proc = bio.Proc(s, worker_command(kind), self.logs, kind)
            sampler = CpuSampler({**stack_pids(s), "worker": proc.pid}).start()
            try:
                timeout = 120 + n / 100
                bio.wait_records(s, s.topic("predictions"), n, timeout, [proc])
                result: dict[str, Any] = {}
                if kind.endswith("index"):
                    first, last = indexed_span(s, n, 1 + challengers, timeout, proc)
                    result["index_events_per_s"] = n / (last - first) if last > first \
                        else float("nan")
                    result["index_cpu"] = sampler.usage(first, last)
                result["rss_bytes"] = proc.rss_bytes()
            finally:
                sampler.stop()
                proc.stop()
            stamps = bio.record_timestamps(s, s.topic("predictions"), n)
            result["events_per_s"] = record_rate(stamps)
            result["cpu"] = window_usage(sampler, stamps)
            return result
        finally:
            self.drop(s)


_SCORE_WORKER = ["precog", "worker", "--agents", "control,score", "--loglevel", "warning"]


def worker_command(kind: str) -> list[str]:
    return {
        "precog": _SCORE_WORKER,
        "precog_many": _SCORE_WORKER,  # the same worker, on other events
        "precog_index": ["precog", "worker", "--agents", "control,score,index",
                         "--loglevel", "warning"],
        "passthrough": ["precog.bench.apps", "passthrough"],
        "naive": ["precog.bench.apps", "naive"],
        "naive_index": ["precog.bench.apps", "naive", "--index"],
        "quix_passthrough": ["precog.bench.quix_apps", "passthrough"],
        "quix_naive": ["precog.bench.quix_apps", "naive"],
        "floor": ["precog.bench.floor"],
    }[kind]


def generate_events(spec: Any, n: int, seed: int = 42,
                    entities: int | None = None) -> list[tuple[bytes, bytes, bytes]]:
    """``n`` valid events of the simulator ``spec`` names, as (key = entity id, Avro value,
    event id); ``entities``: the world's entities (None: the simulator's default)."""
    from precog.avro import Codec
    from precog.simulate import SimConfig, simulator_for

    sim = simulator_for(SimConfig(seed=seed, entities=entities), spec)
    codec = Codec.for_schema(sim.spec.event.schema_name)
    ev = sim.spec.event
    out = []
    for e in sim.events(n):
        rec = e.record
        out.append((str(rec[ev.entity_field]).encode(), codec.encode(rec),
                    str(rec[ev.id_field]).encode()))
    return out


def wait_indexed(s: Settings, events: int, models: int, timeout: float,
                 proc: bio.Proc) -> float:
    """Wait for the ``events`` x ``models`` prediction documents; events/s from first scored
    to last indexed (ids are deterministic, so that many documents are that many events)."""
    first, last = indexed_span(s, events, models, timeout, proc)
    return events / (last - first) if last > first else float("nan")


def indexed_span(s: Settings, events: int, models: int, timeout: float,
                 proc: bio.Proc) -> tuple[float, float]:
    """Wait for the ``events`` x ``models`` prediction documents; the first scored and the
    last indexed time among them (seconds since the epoch)."""
    from precog.io.elasticsearch import elasticsearch_client

    docs = events * models
    es = elasticsearch_client(s)
    index = s.index("predictions")
    deadline = time.monotonic() + timeout
    try:
        while True:
            proc.check_alive()
            # no forced refresh while polling: a refresh per poll would make Elasticsearch
            # write tiny segments for the harness; counts see the 1 s periodic refreshes
            # the index is created by the first bulk request
            if es.indices.exists(index=index) and int(es.count(index=index)["count"]) >= docs:
                break
            if time.monotonic() > deadline:
                raise bio.BenchError(f"{index}: fewer than {docs} documents after {timeout:.0f}s")
            time.sleep(0.5)
        aggs = _span_aggregations(es, index, deadline)
        return aggs["first"]["value"] / 1000.0, aggs["last"]["value"] / 1000.0
    finally:
        es.close()


def _span_aggregations(es: Any, index: str, deadline: float) -> dict[str, Any]:
    """First scored and last indexed time of ``index``. A search can fail with 503 while
    Elasticsearch moves a shard it has just counted (seen once in CI on a loaded machine):
    wait for the shards and retry until ``deadline``, then name the shard-level cause."""
    from elasticsearch import ApiError

    while True:
        try:
            es.cluster.health(index=index, wait_for_status="yellow",
                              wait_for_no_initializing_shards=True, timeout="30s")
            es.indices.refresh(index=index)
            return es.search(index=index, size=0, aggs={  # type: ignore[no-any-return]
                "first": {"min": {"field": "scored_time"}},
                "last": {"max": {"field": "indexed_time"}},
            })["aggregations"]
        except ApiError as exc:
            if exc.meta.status != 503 or time.monotonic() > deadline:
                causes = (exc.body or {}).get("error", {}).get("root_cause", []) \
                    if isinstance(exc.body, dict) else []
                why = "; ".join(str(c.get("reason", c)) for c in causes) or str(exc)
                raise bio.BenchError(f"{index}: search failed ({exc.meta.status}): {why}") \
                    from exc
            time.sleep(1.0)


# -- sections ------------------------------------------------------------------------------
