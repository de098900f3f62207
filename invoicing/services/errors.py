"""Errors of the invoicing services."""


class InvoiceError(Exception):
    """A close or correction that cannot be done as asked (the message says why)."""
