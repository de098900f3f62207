"""Gapless invoice and credit note numbers per issuing year (INV-2026-000001, CN-2026-000001)."""

from django.db import transaction

from invoicing.models import NumberSequence


def allocate_number(kind: str, year: int) -> str:
    """The next number of the year, gapless: the counter row is locked until our commit, and a
    rollback returns the number with it. Must run inside the issuing transaction."""
    assert transaction.get_connection().in_atomic_block
    NumberSequence.objects.bulk_create([NumberSequence(kind=kind, year=year)], ignore_conflicts=True)
    sequence = NumberSequence.objects.select_for_update().get(kind=kind, year=year)
    value = sequence.last_value + 1
    NumberSequence.objects.filter(pk=sequence.pk).update(last_value=value)
    return f"{kind}-{year:04d}-{value:06d}"
