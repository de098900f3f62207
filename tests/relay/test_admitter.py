"""The admitter's group commit: a tenant's calls arriving while its group is held go together,
tenants do not wait for each other, and a call that gives up has its hold given back. The
preparer's batches: calls waiting meanwhile go together, each with its own answer.

The write here stands in for calls.relay_admit_many (tests/billing/test_hold_groups.py and the
relay's own tests cover what it does on PostgreSQL and Redis); what is tested is the grouping.
"""

import asyncio
import os
from types import SimpleNamespace

from relay.admitter import BATCHES_IN_FLIGHT, GROUP_MAX, Admitter, Preparer
from relay.errors import RelayError
from relay.gateway import _request_ids
from relay.services.calls import Admitted
from tests.relay.conftest import run_async


def call(tenant_id: int, name: str) -> SimpleNamespace:
    return SimpleNamespace(tenant_id=tenant_id, request_id=name)


def admitted(request_id: str) -> Admitted:
    return Admitted(None, request_id, "chat.completions", "m", 1, 1, [], False)  # type: ignore[arg-type]


class Upstairs:
    """The write and release the admitter calls, recording each group; `gate` holds writes."""

    def __init__(self) -> None:
        self.groups: list[list[str]] = []
        self.released: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.refuse: set[str] = set()
        self.fail = False

    async def write(self, group):
        self.groups.append([c.request_id for c in group])
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("database away")
        return [
            RelayError(402, "no money", code="insufficient_quota")
            if c.request_id in self.refuse
            else admitted(c.request_id)
            for c in group
        ]

    async def release(self, answer: Admitted) -> None:
        self.released.append(answer.request_id)


def test_calls_arriving_during_a_group_go_together_in_the_next():
    async def main():
        up = Upstairs()
        admitter = Admitter(asyncio.get_running_loop(), up.write, up.release)
        up.gate.clear()
        first = asyncio.create_task(admitter.admit(call(1, "a")))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        rest = [asyncio.create_task(admitter.admit(call(1, f"b{i}"))) for i in range(5)]
        other = asyncio.create_task(admitter.admit(call(2, "other")))
        await asyncio.sleep(0.01)
        assert up.groups == [["a"], ["other"]]  # tenant 2 did not wait for tenant 1's group
        up.gate.set()
        answers = await asyncio.gather(first, *rest, other)
        return up, answers

    up, answers = run_async(main)
    assert up.groups == [["a"], ["other"], [f"b{i}" for i in range(5)]]
    assert [a.request_id for a in answers] == ["a", *[f"b{i}" for i in range(5)], "other"]


def test_refusals_reach_their_own_call_only():
    async def main():
        up = Upstairs()
        up.refuse = {"poor"}
        admitter = Admitter(asyncio.get_running_loop(), up.write, up.release)
        return await asyncio.gather(
            admitter.admit(call(1, "rich")), admitter.admit(call(1, "poor")), return_exceptions=True
        )

    rich, poor = run_async(main)
    assert isinstance(rich, Admitted) and rich.request_id == "rich"
    assert isinstance(poor, RelayError) and poor.status == 402


def test_a_call_that_gives_up_while_its_group_is_held_has_its_hold_released():
    async def main():
        up = Upstairs()
        admitter = Admitter(asyncio.get_running_loop(), up.write, up.release)
        up.gate.clear()
        stays = asyncio.create_task(admitter.admit(call(1, "stays")))
        leaves = asyncio.create_task(admitter.admit(call(1, "leaves")))
        await asyncio.sleep(0.01)
        leaves.cancel()
        up.gate.set()
        await stays
        await asyncio.sleep(0.01)  # the release task runs
        return up

    up = run_async(main)
    assert up.released == ["leaves"]


def test_a_failed_write_fails_its_group_and_the_next_group_still_goes():
    async def main():
        up = Upstairs()
        up.fail = True
        admitter = Admitter(asyncio.get_running_loop(), up.write, up.release)
        failed = await asyncio.gather(admitter.admit(call(1, "x")), return_exceptions=True)
        up.fail = False
        return failed, await admitter.admit(call(1, "y"))

    failed, later = run_async(main)
    assert isinstance(failed[0], RuntimeError) and later.request_id == "y"


def test_a_group_is_at_most_group_max_calls():
    async def main():
        up = Upstairs()
        admitter = Admitter(asyncio.get_running_loop(), up.write, up.release)
        up.gate.clear()
        tasks = [asyncio.create_task(admitter.admit(call(1, str(i)))) for i in range(GROUP_MAX + 10)]
        await asyncio.sleep(0.01)
        up.gate.set()
        await asyncio.gather(*tasks)
        return up

    up = run_async(main)
    assert [len(group) for group in up.groups] == [GROUP_MAX, 10]


def gated_hold(gate: asyncio.Event, request_id: str):
    """A lone call's prepare-and-hold that answers once `gate` opens."""

    async def prepare_and_hold():
        await gate.wait()
        return admitted(request_id)

    return prepare_and_hold


def test_a_lone_call_goes_in_one_step_and_its_tenant_queues_behind_it():
    async def main():
        up = Upstairs()
        admitter = Admitter(asyncio.get_running_loop(), up.write, up.release)
        gate = asyncio.Event()
        prepare_and_hold = gated_hold(gate, "alone")
        alone = asyncio.create_task(admitter.admit_alone(1, prepare_and_hold))
        await asyncio.sleep(0)
        busy = not admitter.idle(1)
        later = asyncio.create_task(admitter.admit(call(1, "later")))
        other = asyncio.create_task(admitter.admit(call(2, "other")))
        await asyncio.sleep(0.01)
        groups_meanwhile = [list(group) for group in up.groups]
        gate.set()
        answers = await asyncio.gather(alone, later, other)
        await asyncio.sleep(0)
        return up, busy, groups_meanwhile, answers, admitter.idle(1)

    up, busy, groups_meanwhile, answers, idle_after = run_async(main)
    assert busy and groups_meanwhile == [["other"]]  # tenant 1's next call waited, tenant 2 did not
    assert up.groups == [["other"], ["later"]]
    assert [a.request_id for a in answers] == ["alone", "later", "other"]
    assert idle_after


def test_a_lone_call_that_gives_up_while_held_has_its_hold_released():
    async def main():
        up = Upstairs()
        admitter = Admitter(asyncio.get_running_loop(), up.write, up.release)
        gate = asyncio.Event()
        prepare_and_hold = gated_hold(gate, "leaves")
        leaves = asyncio.create_task(admitter.admit_alone(1, prepare_and_hold))
        await asyncio.sleep(0.01)
        leaves.cancel()
        gate.set()
        await asyncio.sleep(0.01)  # the hold finishes, then its release runs
        return up, admitter.idle(1)

    up, idle = run_async(main)
    assert up.released == ["leaves"] and idle


def test_a_lone_call_refused_gets_its_error_and_frees_its_tenant():
    async def main():
        admitter = Admitter(asyncio.get_running_loop(), Upstairs().write, Upstairs().release)

        async def prepare_and_hold():
            raise RelayError(402, "no money", code="insufficient_quota")

        answer = await asyncio.gather(admitter.admit_alone(1, prepare_and_hold), return_exceptions=True)
        return answer[0], admitter.idle(1)

    refused, idle = run_async(main)
    assert isinstance(refused, RelayError) and refused.status == 402 and idle


def test_a_lone_hold_cancelled_underneath_cancels_its_caller_rather_than_leaving_it_waiting():
    async def main():
        admitter = Admitter(asyncio.get_running_loop(), Upstairs().write, Upstairs().release)

        async def prepare_and_hold():
            raise asyncio.CancelledError  # as when the loop closes under the hop

        answer = await asyncio.wait_for(
            asyncio.gather(admitter.admit_alone(1, prepare_and_hold), return_exceptions=True), 1
        )
        return answer[0], admitter.idle(1)

    cancelled, idle = run_async(main)
    assert isinstance(cancelled, asyncio.CancelledError) and idle


class Preparing:
    """The batch preparation the preparer calls, recording each batch; `gate` holds batches."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def prepare_many(self, facts):
        self.batches.append([one["request_id"] for one in facts])
        await self.gate.wait()
        return [
            RelayError(401, "Incorrect API key provided.") if one.get("bad") else call(1, one["request_id"])
            for one in facts
        ]


async def fill_batches(preparer: Preparer, prefix: str) -> list[asyncio.Task]:
    """Every batch place taken, one call each (the gate must be closed)."""
    tasks = []
    for i in range(BATCHES_IN_FLIGHT):
        tasks.append(asyncio.create_task(preparer.prepare({"request_id": f"{prefix}{i}"})))
        await asyncio.sleep(0.01)
    return tasks


def test_calls_waiting_to_be_prepared_go_together_with_a_bounded_number_of_batches_in_flight():
    async def main():
        preparing = Preparing()
        preparer = Preparer(asyncio.get_running_loop(), preparing.prepare_many)
        preparing.gate.clear()
        early = await fill_batches(preparer, "e")
        late = [asyncio.create_task(preparer.prepare({"request_id": f"l{i}"})) for i in range(5)]
        await asyncio.sleep(0.01)
        in_flight = [list(batch) for batch in preparing.batches]
        preparing.gate.set()
        answers = await asyncio.gather(*early, *late)
        return preparing, in_flight, answers

    preparing, in_flight, answers = run_async(main)
    assert in_flight == [[f"e{i}"] for i in range(BATCHES_IN_FLIGHT)]  # the late calls waited
    assert preparing.batches[BATCHES_IN_FLIGHT:] == [[f"l{i}" for i in range(5)]]
    assert [a.request_id for a in answers] == [f"e{i}" for i in range(BATCHES_IN_FLIGHT)] + [f"l{i}" for i in range(5)]


def test_a_call_whose_preparation_fails_gets_its_own_error_only():
    async def main():
        preparing = Preparing()
        preparer = Preparer(asyncio.get_running_loop(), preparing.prepare_many)
        preparing.gate.clear()
        blockers = await fill_batches(preparer, "x")
        good = asyncio.create_task(preparer.prepare({"request_id": "good"}))
        bad = asyncio.create_task(preparer.prepare({"request_id": "bad", "bad": True}))
        leaves = asyncio.create_task(preparer.prepare({"request_id": "leaves"}))
        await asyncio.sleep(0.01)
        leaves.cancel()
        preparing.gate.set()
        await asyncio.gather(*blockers, good, bad, return_exceptions=True)
        return preparing, good, bad

    preparing, good, bad = run_async(main)
    assert ["good", "bad", "leaves"] in preparing.batches  # one batch, one answer each
    assert good.result().request_id == "good"
    assert isinstance(bad.exception(), RelayError) and bad.exception().status == 401  # raised, not returned


def test_request_ids_differ_across_forked_workers():
    """Workers forked from a preloaded master must not share a request-id sequence: a repeated
    request_id would find another call's hold."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first id, then exit at once
        os.write(write, _request_ids.new().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    ours = [_request_ids.new() for _ in range(3)]
    assert child.startswith("relay-") and len(child) == len(ours[0]) == 38
    assert child[:22] != ours[0][:22] and len(set(ours)) == 3
