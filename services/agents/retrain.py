"""The retrain controller inside the worker (the opt-in agent ``retrain``).

A retrain run reads the namespace's topics and fits every model of the spec: seconds to
minutes of CPU. In the worker's event loop that would stall scoring, and in a thread it
would hold the GIL the score agent needs, so the agent runs the controller as a **child
process** of the worker: ``python -m precog retrain watch --spec <the worker's spec> --every
<PRECOG_LIFECYCLE_RETRAIN_CHECK_SECONDS>``, with the worker's environment (namespace,
credentials). Its output goes to the worker's log (logger ``precog.retrain``); when it exits
it is started again after a back-off (5 s, doubling to 5 min; a run that lasted a minute
resets it), and when the worker stops it gets SIGTERM, then SIGKILL after 10 s (on Linux
the kernel sends it SIGTERM also when the worker dies without stopping). So one
deployment unit (a worker started with ``--agents ...,retrain``) scores and retrains, and a
retrain never slows the hot path more than the machine's cores do.

Nothing starts when the spec has no ``retraining.triggers``. Run the agent in **one**
worker per namespace: each controller counts the cool-down from the last audited run, and two
that check at the same moment could both start one. ``precog retrain watch`` as its own
process (docs/lifecycle.md) is the same controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time

from precog.services.runtime import Runtime

log = logging.getLogger("precog.retrain")

#: back-off after the controller exits: first, maximum (s); a run this long resets it
BACKOFF = (5.0, 300.0)
RESET_AFTER = 60.0
STOP_GRACE = 10.0


def command(rt: Runtime) -> list[str]:
    """The controller's command line for this worker's spec and check period."""
    return [sys.executable, "-m", "precog", "retrain", "watch", "--spec",
            str(rt.settings.spec), "--every", f"{rt.settings.lifecycle.retrain_check_seconds:g}"]


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the worker dies, even by kill -9."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the worker's stop does
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class RetrainController:
    """Keeps one ``precog retrain watch`` child running until :meth:`stop`."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        delay = BACKOFF[0]
        while not self._stopping.is_set():
            started = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(
                *command(self.rt), stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},  # its lines as they come
                preexec_fn=_die_with_parent)
            self.starts += 1
            log.info("retrain controller started (pid %d): %s", self.proc.pid,
                     " ".join(command(self.rt)[2:]))
            assert self.proc.stdout is not None
            async for line in self.proc.stdout:
                log.info("retrain: %s", line.decode(errors="replace").rstrip())
            code = await self.proc.wait()
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= RESET_AFTER:
                delay = BACKOFF[0]
            log.warning("retrain controller exited with %d; starting it again in %.0f s",
                        code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(BACKOFF[1], delay * 2)

    async def stop(self) -> None:
        self._stopping.set()
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            log.warning("retrain controller (pid %d) did not stop in %.0f s: killing it",
                        proc.pid, STOP_GRACE)
            proc.kill()
            await proc.wait()
        log.info("retrain controller (pid %d) stopped with the worker (exit %s)", proc.pid,
                 proc.returncode)


def register(rt: Runtime) -> None:
    if not rt.spec.retraining.triggers:
        log.info("retrain agent idle: spec %s has no retraining.triggers", rt.spec.name)
        return
    controller = RetrainController(rt)

    @rt.app.task
    async def retrain_controller() -> None:
        await controller.run()

    rt.on_stop.append(controller.stop)
