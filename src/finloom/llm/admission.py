"""Admission to a model server: at most ``max_concurrency`` requests hold a slot (generate) at once; up to
``max_queue`` more wait for one, in arrival order; more are refused at once rather than piling up.

Generation is synchronous torch code run in threads: counting slots on the event loop keeps a waiting
request from holding a thread, and lets ``/health`` say what is running and what waits.
"""

from __future__ import annotations

import asyncio


class QueueFull(Exception):
    """Every slot is taken and ``max_queue`` requests already wait."""


class WaitedTooLong(Exception):
    """No slot came free before the request's deadline."""


class Admission:
    def __init__(self, max_concurrency: int, max_queue: int):
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.in_flight = 0
        self.queued = 0
        self._slots = asyncio.Semaphore(max_concurrency)

    async def enter(self, timeout: float) -> Slot:
        """A slot, waiting at most ``timeout`` seconds for one; raises ``QueueFull`` or ``WaitedTooLong``."""
        if self._slots.locked():
            await self._wait(timeout)
        else:
            await self._slots.acquire()  # a free slot: taken without suspending, so never counted as queued
        self.in_flight += 1
        return Slot(self)

    async def _wait(self, timeout: float) -> None:
        if self.queued >= self.max_queue:
            raise QueueFull
        self.queued += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), max(timeout, 0))
        except asyncio.TimeoutError:
            raise WaitedTooLong from None
        finally:
            self.queued -= 1

    def _leave(self) -> None:
        self.in_flight -= 1
        self._slots.release()


class Slot:
    """A held slot; ``release()`` may be called more than once (a stream's end and its handler both do)."""

    def __init__(self, admission: Admission):
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission._leave()
            self._admission = None
