"""Assemble and run one precog worker: the Faust app with its agents and web pages."""

from __future__ import annotations

import importlib
import logging

import faust
from precog.services import watchdog, web
from precog.services.runtime import Runtime, create_app, install_event_loop, run_worker

from precog.settings import Settings
from precog.spec import load_spec

log = logging.getLogger("precog.worker")

#: Agent modules in services/agents, registered in this order.
DEFAULT_AGENTS = ("control", "score", "index", "join", "monitor")


def build_runtime(settings: Settings, agents: tuple[str, ...] = DEFAULT_AGENTS) -> Runtime:
    """A Runtime with the named agents registered (missing optional agents are skipped)."""
    from precog.registry import code_version

    spec = load_spec(settings.spec)
    rt = Runtime(settings=settings, spec=spec, app=create_app(settings))
    rt.code_version = code_version(settings)
    for name in agents:
        try:
            module = importlib.import_module(f"precog.services.agents.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"precog.services.agents.{name}":
                raise
            log.warning("agent %s is not available; skipping", name)
            continue
        module.register(rt)
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

    return rt


def run(
    settings: Settings, agents: tuple[str, ...] = DEFAULT_AGENTS, loglevel: str = "info"
) -> None:
    """Run the worker until interrupted."""
    from precog.services.preflight import check_all

    from precog.namespace import ensure_topics

    check_all(settings, elasticsearch="index" in agents or "monitor" in agents)
    install_event_loop(settings)
    rt = build_runtime(settings, agents)
    ensure_topics(settings, rt.spec)  # Faust would otherwise ignore topics that do not exist
    run_worker(rt.app, settings, loglevel)
