"""Reads of the relay for other layers (the portal)."""

from relay.models import Upstream


def relay_models_served() -> list[str]:
    """The exact model names the enabled upstreams serve (globs cannot be listed)."""
    names = {
        pattern
        for model_map in Upstream.objects.filter(enabled=True).values_list("model_map", flat=True)
        for pattern in model_map
        if not any(char in pattern for char in "*?[")
    }
    return sorted(names)
