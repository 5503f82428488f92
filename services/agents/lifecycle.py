"""The promotion and traffic policies inside the worker: evaluate them on timers.

The traffic policy (``spec.traffic``, canary or ab) is evaluated the same way, with
:func:`precog.services.lifecycle.evaluate_traffic` on a timer of its own: four ticks per
``traffic.interval`` (10 s to 15 min), or ``PRECOG_LIFECYCLE_TICK_SECONDS`` as for the
promotion timer; nothing runs for ``shadow``.

Nothing runs for the ``manual`` policy. For ``best-recent`` a timer ticks four times per
evaluation interval (between 10 s and 15 min; ``PRECOG_LIFECYCLE_TICK_SECONDS`` sets it);
each tick runs
:func:`precog.services.lifecycle.evaluate` in a thread. The first tick of an interval
decides; later ticks of the same interval find the decision by its id and apply nothing new,
so several workers, or a restarted one, make one decision per interval.
"""

from __future__ import annotations

import asyncio
import logging

from precog.services.lifecycle import evaluate, evaluate_traffic
from precog.services.runtime import Runtime

from precog.errors import PrecogError
from precog.spec import parse_duration

log = logging.getLogger("precog.lifecycle")


def tick_seconds(interval: str) -> float:
    """Seconds between two ticks for an evaluation ``interval``.

    >>> tick_seconds("1h"), tick_seconds("10s"), tick_seconds("1d")
    (900.0, 10.0, 900.0)
    """
    return max(10.0, min(900.0, parse_duration(interval) / 4000))


def register(rt: Runtime) -> None:
    _register_traffic(rt)
    policy = rt.spec.promotion
    if policy.policy == "manual":
        log.info("promotion policy manual: leader changes come from `precog models`")
        return

    every = rt.settings.lifecycle.tick_seconds or tick_seconds(policy.interval)

    @rt.app.timer(every)
    async def _evaluate() -> None:
        if rt.stopping:
            return
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(None, lambda: evaluate(rt.settings, rt.spec))
        except PrecogError as exc:
            log.warning("promotion policy not evaluated: %s", exc)
            return
        if out.made_now or out.applied:
            d = out.decision
            log.info("promotion decision %s: %s (%s)%s", d["decision_id"], d["action"],
                     d["reason"], "; applied" if out.applied else "")


def _register_traffic(rt: Runtime) -> None:
    policy = rt.spec.traffic
    if policy.policy == "shadow":
        return

    every = rt.settings.lifecycle.tick_seconds or tick_seconds(policy.interval)

    @rt.app.timer(every)
    async def _evaluate_traffic() -> None:
        if rt.stopping:
            return
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(None, lambda: evaluate_traffic(rt.settings,
                                                                            rt.spec))
        except PrecogError as exc:
            log.warning("traffic policy not evaluated: %s", exc)
            return
        if out.made_now or out.applied:
            d = out.decision
            log.info("traffic decision %s: %s (%s)%s", d["decision_id"], d["action"],
                     d["reason"], "; applied" if out.applied else "")
