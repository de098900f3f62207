"""The per-process admitter: calls are prepared in batches and a tenant's holds placed in groups,
one commit per group.

Every hold of a tenant moves its wallet row, so one at a time they queue on that row's lock
for a commit each (a WAL flush): a burst of 1,000 calls of one tenant waited seconds. Here the
calls of a tenant that arrive while its previous group is being held wait for it to finish and
then go together (calls.relay_admit_many: one Redis script call, one PostgreSQL statement, one
commit). A lone call goes at once (prepared and held in one hop when its key is known here:
`admit_alone`); under load the group grows with the queue, so the commit rate stops bounding
admissions. Different tenants' groups run side by side on the thread pool.

The decisions are the ones a call alone would get, in arrival order (billing/services/
hold_batch.py). A call that gives up while its group is being held (the client went away) has
its hold released as soon as the group returns.

Before its hold, a call is prepared (key, limits, estimate: calls.relay_prepare) on the thread
pool too. The `Preparer` sends the calls waiting for that together as well: a burst's calls
in a few hops instead of one each, since every hop passes the interpreter lock between the
event loop and a thread several times.
"""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from relay import metrics
from relay.errors import RelayError
from relay.loop_local import loop_local
from relay.services.calls import Admitted, Prepared

Write = Callable[[list[Prepared]], Awaitable[list[Admitted | RelayError]]]
Release = Callable[[Admitted], Coroutine[Any, Any, None]]
PrepareMany = Callable[[list[dict[str, Any]]], Awaitable[list[Prepared | Exception]]]
GROUP_MAX = 500  # calls per statement: bounds its size and one group's wait
BATCHES_IN_FLIGHT = 2  # so one slow preparation (a key looked up in the database) holds up half


class Preparer:
    """Prepare the calls that wait meanwhile together, at most BATCHES_IN_FLIGHT batches at once.

    1,000 streams opened together, alternated burst by burst inside one relay process: relay
    CPU per stream 13 % lower, p99 stream time 73-80 ms lower than with one hop per call."""

    def __init__(self, loop: asyncio.AbstractEventLoop, prepare_many: PrepareMany) -> None:
        self.loop = loop
        self._prepare_many = prepare_many
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[Prepared]]] = []
        self._in_flight = 0

    async def prepare(self, facts: dict[str, Any]) -> Prepared:
        """calls.relay_prepare(**facts), in a batch with the calls waiting now: its result or error."""
        future: asyncio.Future[Prepared] = self.loop.create_future()
        self._waiting.append((facts, future))
        if self._in_flight < BATCHES_IN_FLIGHT:
            self._in_flight += 1
            self.loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:GROUP_MAX], self._waiting[GROUP_MAX:]
                try:
                    answers = await self._prepare_many([facts for facts, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every call of the batch answers it
                    answers = [exc] * len(batch)
                for (_, future), answer in zip(batch, answers, strict=True):
                    if future.done():  # the caller left: preparing has nothing to undo
                        continue
                    if isinstance(answer, Exception):
                        future.set_exception(answer)
                    else:
                        future.set_result(answer)
        finally:
            self._in_flight -= 1


class Admitter:
    def __init__(self, loop: asyncio.AbstractEventLoop, write: Write, release: Release) -> None:
        self.loop = loop
        self._write = write
        self._release = release
        self._waiting: dict[int, list[tuple[Prepared, asyncio.Future[Admitted]]]] = {}
        self._busy: set[int] = set()  # tenants with a group being held

    async def admit(self, prepared: Prepared) -> Admitted:
        """Hold for one call (with the others of its tenant waiting now): its admission, or RelayError."""
        future: asyncio.Future[Admitted] = self.loop.create_future()
        tenant_id = prepared.tenant_id
        self._waiting.setdefault(tenant_id, []).append((prepared, future))
        if tenant_id not in self._busy:
            self._busy.add(tenant_id)
            self.loop.create_task(self._drain(tenant_id))
        return await future

    def idle(self, tenant_id: int) -> bool:
        """No group of this tenant is being held now."""
        return tenant_id not in self._busy

    async def admit_alone(self, tenant_id: int, prepare_and_hold: Callable[[], Awaitable[Admitted]]) -> Admitted:
        """One call of an idle tenant, prepared and held in one thread-pool hop instead of two
        (the common case below saturation). The tenant counts as busy meanwhile: its calls
        arriving now queue as in `admit` and go together once this one is held."""
        future: asyncio.Future[Admitted] = self.loop.create_future()
        self._busy.add(tenant_id)
        task = self.loop.create_task(self._alone(tenant_id, prepare_and_hold))
        task.add_done_callback(lambda done: self._alone_done(future, done))
        return await future

    async def _alone(self, tenant_id: int, prepare_and_hold: Callable[[], Awaitable[Admitted]]) -> Admitted:
        metrics.ADMIT_GROUP.observe(1)
        try:
            return await prepare_and_hold()
        finally:
            if self._waiting.get(tenant_id):
                self.loop.create_task(self._drain(tenant_id))  # still busy: the drain lets go
            else:
                self._busy.discard(tenant_id)

    def _alone_done(self, future: asyncio.Future[Admitted], task: asyncio.Task[Admitted]) -> None:
        if task.cancelled():  # the loop is closing: so is its caller
            future.cancel()
            return
        exc = task.exception()
        if exc is None:
            self._deliver(future, task.result())
        elif isinstance(exc, RelayError):
            self._deliver(future, exc)
        elif not future.done():
            future.set_exception(exc)

    async def _drain(self, tenant_id: int) -> None:
        try:
            while group := self._waiting.pop(tenant_id, None):
                if len(group) > GROUP_MAX:
                    self._waiting[tenant_id] = group[GROUP_MAX:] + self._waiting.get(tenant_id, [])
                    group = group[:GROUP_MAX]
                metrics.ADMIT_GROUP.observe(len(group))
                try:
                    answers = await self._write([prepared for prepared, _ in group])
                except Exception as exc:  # noqa: BLE001 - the write logged it; every call of the group answers it
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), answer in zip(group, answers, strict=True):
                    self._deliver(future, answer)
        finally:
            self._busy.discard(tenant_id)

    def _deliver(self, future: asyncio.Future[Admitted], answer: Admitted | RelayError) -> None:
        if future.cancelled():
            if isinstance(answer, Admitted):  # nobody will forward it: its hold goes back now
                self.loop.create_task(self._release(answer))
        elif isinstance(answer, RelayError):
            future.set_exception(answer)
        else:
            future.set_result(answer)


_admitters: dict[int, Admitter] = {}
_preparers: dict[int, Preparer] = {}


def preparer(prepare_many: PrepareMany) -> Preparer:
    """The preparer of the running event loop (a worker has one)."""
    return loop_local(_preparers, lambda loop: Preparer(loop, prepare_many))


def admitter(write: Write, release: Release) -> Admitter:
    """The admitter of the running event loop (a worker has one)."""
    return loop_local(_admitters, lambda loop: Admitter(loop, write, release))


__all__ = ["BATCHES_IN_FLIGHT", "GROUP_MAX", "Admitter", "Preparer", "admitter", "preparer"]
