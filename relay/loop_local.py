"""One object per running event loop (a worker has one loop): the admitter, preparer, recorder."""

import asyncio
from collections.abc import Callable
from typing import Protocol, TypeVar


class _OfLoop(Protocol):
    loop: asyncio.AbstractEventLoop


T = TypeVar("T", bound=_OfLoop)


def loop_local(registry: dict[int, T], make: Callable[[asyncio.AbstractEventLoop], T]) -> T:
    """The running loop's entry of `registry`, made on first use (or when a loop reused the id of
    a closed one: tests start many)."""
    loop = asyncio.get_running_loop()
    found = registry.get(id(loop))
    if found is None or found.loop is not loop:
        found = registry[id(loop)] = make(loop)
    return found
