"""The per-process recorder: finished calls are recorded in batches, not one transaction each.

A call that ends with output is handed to the recorder of its event loop (`record`), which
writes what collected every RELAY_RECORD_INTERVAL_MS (or at once when RELAY_RECORD_BATCH calls
wait) through relay_record_batch, one thread-pool hop and one ingest transaction per tenant for
the whole batch. Exactly-once stays ingest's: the event's key is (tenant, request_id), so a
batch written twice (a retry after an unclear failure) stores nothing twice.

The buffer is in memory. A graceful stop (lifespan shutdown) writes it out; a process killed
outright loses the calls that finished in the last interval and the write under way. Their holds
stay open and are released at expiry (release_expired_holds): the tenant is not charged for
them, nobody is charged twice (docs/relay.md, "Recording and its loss bound").
"""

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from relay import metrics
from relay.loop_local import loop_local
from relay.services.calls import Finished

logger = logging.getLogger("relay")

Writer = Callable[[list[Finished]], Awaitable[list[bool]]]
_ATTEMPTS = 5  # a call whose batch keeps failing is tried alone this many times, then logged and left


class Recorder:
    def __init__(self, loop: asyncio.AbstractEventLoop, write: Writer) -> None:
        self.loop = loop
        self._write = write
        self._pending: list[tuple[Finished, int]] = []
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one write at a time: flush waits for the one under way
        self._task: asyncio.Task[None] | None = None

    def add(self, call: Finished) -> None:
        self._pending.append((call, 0))
        metrics.RECORD_PENDING.inc()
        if self._task is None or self._task.done():
            self._task = self.loop.create_task(self._run())
        if len(self._pending) >= settings.RELAY_RECORD_BATCH or not self._wake.is_set():
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if len(self._pending) < settings.RELAY_RECORD_BATCH:
                await asyncio.sleep(settings.RELAY_RECORD_INTERVAL_MS / 1000)  # let the batch fill
            self._wake.clear()
            failed = await self._write_pending()
            if failed:
                await asyncio.sleep(min(0.05 * 2**failed, 2))  # the database is away: back off, keep the calls
                self._wake.set()
            elif self._pending:
                self._wake.set()

    async def _write_pending(self) -> int:
        """Write one batch (at most RELAY_RECORD_BATCH); the number of calls left for a retry."""
        async with self._lock:
            size = settings.RELAY_RECORD_BATCH
            batch, self._pending = self._pending[:size], self._pending[size:]
            if not batch:
                return 0
            try:
                await self._write([call for call, _ in batch])
            except Exception:
                logger.exception("relay_record_batch_failed", extra={"calls": len(batch)})
                retry = await self._one_by_one(batch)
                self._pending[:0] = retry
                metrics.RECORD_PENDING.dec(len(batch) - len(retry))
                return len(retry)
            metrics.RECORD_PENDING.dec(len(batch))
            metrics.RECORD_BATCH.observe(len(batch))
            return 0

    async def _one_by_one(self, batch: list[tuple[Finished, int]]) -> list[tuple[Finished, int]]:
        """One bad call must not keep the others of its batch out: write each alone."""
        retry = []
        for call, attempts in batch:
            try:
                await self._write([call])
            except Exception:
                if attempts + 1 < _ATTEMPTS:
                    retry.append((call, attempts + 1))
                else:
                    logger.exception(
                        "relay_record_gave_up", extra={"request_id": call.admitted.request_id, "attempts": _ATTEMPTS}
                    )
        return retry

    async def flush(self) -> None:
        """Write everything collected so far (graceful shutdown; tests waiting for the ledger)."""
        while self._pending:
            if await self._write_pending():
                raise RuntimeError("the relay's recorder could not write its calls")
        async with self._lock:  # and the write under way, if any
            pass

    async def close(self) -> None:
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            self._task = None


_recorders: dict[int, Recorder] = {}


def recorder(write: Writer) -> Recorder:
    """The recorder of the running event loop (a worker has one)."""
    return loop_local(_recorders, lambda loop: Recorder(loop, write))


async def recorder_close() -> None:
    found = _recorders.pop(id(asyncio.get_running_loop()), None)
    if found is not None:
        await found.close()


def recorders_flush(timeout: float = 30) -> None:
    """From any other thread: wait until every loop's recorder has written what it holds."""
    futures: list[concurrent.futures.Future[Any]] = [
        asyncio.run_coroutine_threadsafe(found.flush(), found.loop)
        for found in list(_recorders.values())
        if not found.loop.is_closed()
    ]
    for future in futures:
        future.result(timeout)


__all__ = ["Recorder", "recorder", "recorder_close", "recorders_flush"]
