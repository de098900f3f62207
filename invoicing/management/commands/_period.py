"""Argument helpers shared by the invoicing commands."""

from django.core.management.base import CommandError

from invoicing.services import parse_period


def period_or_error(value: str) -> tuple[int, int]:
    try:
        return parse_period(value)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
