"""The one error the alert services raise for input a caller can fix."""


class AlertConfigError(ValueError):
    """A rule or channel cannot be saved as given; the message says why."""
