"""Assemble and run one precog worker: the Faust app with its agents and web pages."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import faust
from precog.services import watchdog, web
from precog.services.agents import index, join, lifecycle, monitor, retrain, role_watcher, score
from precog.services.runtime import Runtime, create_app, install_event_loop, run_worker

from precog.errors import ConfigError
from precog.settings import Settings
from precog.spec import load_spec

log = logging.getLogger("precog.worker")

#: Every agent by the name ``--agents`` knows it by, in registration order. ``control``
#: is the role watcher (hot reload of the model set).
AGENTS: dict[str, Callable[[Runtime], None]] = {
    "control": role_watcher.register,
    "score": score.register,
    "index": index.register,
    "join": join.register,
    "monitor": monitor.register,
    "lifecycle": lifecycle.register,
    # opt-in (one worker per namespace): the retrain controller as a supervised child process
    "retrain": retrain.register,
}
DEFAULT_AGENTS = tuple(a for a in AGENTS if a != "retrain")


def agent_names(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` stripped of blanks, each checked against :data:`AGENTS`.

    >>> agent_names(["control", " score ", ""])
    ('control', 'score')
    >>> agent_names(["score", "scoring"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    precog.errors.ConfigError: unknown agent 'scoring'; choose from control, score, index, ...
    """
    chosen = tuple(n.strip() for n in names if n.strip())
    unknown = [n for n in chosen if n not in AGENTS]
    if unknown:
        raise ConfigError(f"unknown agent{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(map(repr, unknown))}; choose from {', '.join(AGENTS)}")
    return chosen


def build_runtime(settings: Settings, agents: tuple[str, ...] = DEFAULT_AGENTS) -> Runtime:
    """A Runtime with the named agents of :data:`AGENTS` registered, in the order given."""
    from precog.registry import code_version

    names = agent_names(agents)
    spec = load_spec(settings.spec)
    rt = Runtime(settings=settings, spec=spec, app=create_app(settings),
                 code_version=code_version(settings))
    for name in names:
        AGENTS[name](rt)
        rt.agents.append(name)
    web.register(rt)
    watchdog.register(rt)

    @rt.app.on_before_shutdown.connect
    async def _stop(app: faust.App, **kwargs: object) -> None:
        # Faust commits nothing on the way out without stream_wait_empty (which would wait
        # for the batch in flight): commit what was released, so a restart redelivers only
        # the abandoned batch, not the last commit interval's worth of finished ones too
        rt.stopping = True
        try:
            await app.consumer.commit()
        except Exception as exc:  # a stop must go on; the next worker redelivers more
            log.warning("final commit failed (the next worker redelivers more): %s", exc)
        for stop in rt.on_stop:
            await stop()
        await rt.close_producer()  # last: the agents' final dead letters go out through it

    return rt


def run(
    settings: Settings, agents: tuple[str, ...] = DEFAULT_AGENTS, loglevel: str = "info"
) -> None:
    """Run the worker until interrupted."""
    from precog.services.preflight import check_all

    from precog.namespace import ensure_topics

    check_all(settings, elasticsearch=bool({"index", "monitor", "retrain"} & set(agents)))
    install_event_loop(settings)
    rt = build_runtime(settings, agents)
    ensure_topics(settings, rt.spec)  # Faust would otherwise ignore topics that do not exist
    if settings.wire_format == "confluent":  # every schema id now: a missing subject fails here
        from precog.schema_registry import topic_schemas

        for schema_name in sorted(set(topic_schemas(settings, rt.spec).values())):
            rt.codec(schema_name)
    run_worker(rt.app, settings, loglevel)
