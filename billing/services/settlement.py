"""Charging usage: what one ingest batch of one tenant does to money, holds and quotas.

Called once per tenant batch inside the ingest transaction that stores the events, so a
batch costs a fixed number of statements whatever its size: the claim of the batch's open
holds (ingest folds it into the insert), one statement for the ledger entries, the wallet and
the quota counters, and one Redis script call mirroring all of it. Never one query per event.
"""

import datetime as dt
import logging
import zoneinfo
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from django.utils import timezone

from billing.models import LedgerEntry
from billing.money import round_to_ledger, to_micros
from billing.services.balances import MirrorDelta, balance_backend
from billing.services.balances.limits import LimitedScopes, settlement_moves
from billing.services.holds import ClosedHold, release_lines, unreserve
from billing.services.ledger import LedgerLine, ledger_apply
from billing.services.quota_counters import Deltas
from billing.windows import LIFETIME_START, TENANT_SCOPE, Cell

logger = logging.getLogger(__name__)


class ChargeableEvent(Protocol):
    """What settlement reads of a stored event (ingest's NewEvent has these attributes).

    Not metering.selectors.RatedUsage, which is usage summed per month and price for invoices.
    """

    request_id: str
    api_key_id: int
    occurred_at: dt.datetime
    input_tokens: int
    output_tokens: int
    cost: Decimal | None  # unrounded; None when unpriced


@dataclass(frozen=True)
class SettleResult:
    charged: Decimal  # the usage entry's amount (positive), rounded once for the batch
    holds_settled: int
    overage: Decimal  # sum over settled holds of cost beyond the hold (recorded on each hold)
    mirrored: MirrorDelta  # what went to the hot counters before the commit


def usage_settle_batch(
    *,
    tenant_id: int,
    tz_name: str,
    currency: str,
    events: Sequence[ChargeableEvent],
    first_event_id: int,
    claimed: list[ClosedHold],
    now: dt.datetime | None = None,
    limited: LimitedScopes = LimitedScopes(),  # noqa: B008 - frozen, never mutated
) -> SettleResult:
    """Charge newly stored events, settle their holds and count them against quotas.

    Must run inside the transaction that stored the events (ingest), under the balance lock
    that the insert took; all events are the tenant's and were inserted just now. `claimed`:
    the holds the insert claimed (event_store.insert_new). The usage entry keeps ingest's key
    `usage:<first event id>:<count>`; each settled hold posts `release:<hold id>`.
    """
    assert events
    now = now or timezone.now()
    backend = balance_backend()

    zone = zoneinfo.ZoneInfo(tz_name)
    charged = Decimal(0)
    groups: dict[tuple[int, dt.date], list[Any]] = defaultdict(lambda: [0, Decimal(0)])  # (key, local day)
    for event in events:
        group = groups[(event.api_key_id, event.occurred_at.astimezone(zone).date())]
        group[0] += event.input_tokens + event.output_tokens
        if event.cost is not None:
            charged += event.cost
            group[1] += event.cost

    lines = release_lines(claimed)
    charge = round_to_ledger(charged)
    if charged:
        lines.insert(
            0,
            LedgerLine(
                kind=LedgerEntry.Kind.USAGE,
                amount=-charge,
                idempotency_key=f"usage:{first_event_id}:{len(events)}",
                metadata={"events": len(events), "first_event_id": first_event_id},
            ),
        )
    used: dict[Cell, list[Any]] = defaultdict(lambda: [0, Decimal(0)])
    for (api_key_id, day), (tokens, cost) in groups.items():
        for ref in (TENANT_SCOPE, api_key_id):
            for cell in (
                Cell(ref, "day", day),
                Cell(ref, "month", day.replace(day=1)),
                Cell(ref, "lifetime", LIFETIME_START),
            ):
                used[cell][0] += tokens
                used[cell][1] += cost
    deltas: Deltas = {cell: (tokens, to_micros(cost), 0, 0) for cell, (tokens, cost) in used.items()}
    unreserve(deltas, claimed, tz_name)
    move = ledger_apply(tenant_id=tenant_id, currency=currency, lines=lines, cells=deltas, now=now)

    release = [hold.request_id for hold in claimed]
    settled_tokens = {event.request_id: event.input_tokens + event.output_tokens for event in events} if claimed else {}
    buckets, slots = settlement_moves(
        tenant_id,
        [(h.api_key_id, h.request_id, h.estimated_tokens, settled_tokens.get(h.request_id, 0)) for h in claimed],
        limited,
    )
    mirrored = MirrorDelta(balance=to_micros(move), cells=deltas, release=release, buckets=buckets, slots=slots)
    backend.mirror(tenant_id, mirrored)
    overage = sum((hold.overage for hold in claimed), Decimal(0))
    return SettleResult(
        charged=charge if charged else Decimal(0), holds_settled=len(claimed), overage=overage, mirrored=mirrored
    )


def usage_settle_undo_mirror(*, tenant_id: int, settled: SettleResult) -> None:
    """The transaction that settled did not commit: take its mirror back out of the hot counters.

    Ingest sends its last writes and COMMIT together after the mirror ran (one round trip), so
    a failure there (a lost connection, a constraint) surfaces after Redis moved. Best effort:
    a failure here, or a seed between the mirror and this call, leaves drift that the
    reconciler finds and fixes. Dropped hold keys stay dropped (PostgreSQL keeps holds unique).
    """
    try:
        balance_backend().mirror(tenant_id, settled.mirrored.negated())
    except Exception:  # the caller re-raises the failure that matters
        logger.warning("could not undo the balance mirror of tenant %s", tenant_id, exc_info=True)
