"""Serializers that document the API in OpenAPI.

Request bodies are generated from their input contracts (metering/contracts.py), which the
hand-written parsers read too; these serializers never validate a request.
"""

from typing import Any, TypedDict

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from metering.contracts import EVENT, InputContract, InputField


class _Common(TypedDict):
    required: bool
    help_text: str | None


def _drf_field(spec: InputField) -> serializers.Field[Any, Any, Any, Any]:
    common: _Common = {"required": spec.required, "help_text": spec.help_text or None}
    match spec.kind:
        case "string" | "key":
            # None means no bound to DRF; the stubs ask for an int.
            return serializers.CharField(max_length=spec.max_length, allow_blank=spec.allow_blank, **common)  # type: ignore[arg-type]
        case "integer":
            # None means no bound to DRF; the stubs ask for an int.
            return serializers.IntegerField(min_value=spec.min_value, max_value=spec.max_value, **common)  # type: ignore[arg-type]
        case "boolean":
            if spec.default is None:
                return serializers.BooleanField(**common)
            return serializers.BooleanField(default=spec.default, **common)
        case "datetime":
            return serializers.DateTimeField(**common)
        case "choice":
            return serializers.ChoiceField(choices=list(spec.choices), **common)
        case "object":
            return serializers.DictField(**common)
    raise AssertionError(f"no OpenAPI field for kind {spec.kind!r}")


def serializer_for(contract: InputContract) -> type[serializers.Serializer[Any]]:
    """The serializer drf-spectacular documents for `contract` (component `contract.name`)."""
    fields = {spec.name: _drf_field(spec) for spec in contract.fields}
    return type(f"{contract.name}Serializer", (serializers.Serializer,), {"__module__": __name__, **fields})


class ErrorDetailSerializer(serializers.Serializer[Any]):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField(allow_null=True)


class ErrorSerializer(serializers.Serializer[Any]):
    error = ErrorDetailSerializer()


EventInSerializer = serializer_for(EVENT)


class EventOutSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    request_id = serializers.CharField()
    duplicate = serializers.BooleanField()
    cost = serializers.DecimalField(max_digits=38, decimal_places=18, allow_null=True)
    currency = serializers.CharField()
    priced = serializers.BooleanField()
    model = serializers.CharField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    cache_write_1h_tokens = serializers.IntegerField()
    reasoning_tokens = serializers.IntegerField()
    service_tier = serializers.CharField()
    timestamp = serializers.DateTimeField()
    received_at = serializers.DateTimeField()
    api_key_id = serializers.IntegerField()
    token_source = serializers.CharField()
    encoding = serializers.CharField()
    flags = serializers.ListField(
        child=serializers.CharField(),
        help_text="Recorded although a control would have refused it, e.g. model_not_allowed (the "
        "key's allowed_models exclude the model). Usage that happened is always stored and billed.",
    )


class BatchInSerializer(serializers.Serializer[Any]):
    events = EventInSerializer(many=True)


class BatchItemSerializer(serializers.Serializer[Any]):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["accepted", "duplicate", "rejected"])
    id = serializers.IntegerField(required=False)
    request_id = serializers.CharField(required=False)
    error = serializers.DictField(required=False)


class BatchOutSerializer(serializers.Serializer[Any]):
    results = BatchItemSerializer(many=True)
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()


class TokenizeInSerializer(serializers.Serializer[Any]):
    model = serializers.CharField()
    text = serializers.CharField(allow_blank=True)


class TokenizeOutSerializer(serializers.Serializer[Any]):
    model = serializers.CharField()
    tokens = serializers.IntegerField()
    encoding = serializers.CharField()


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "integer"}]})
class UsageGroupField(serializers.Field[Any, Any, Any, Any]):
    """A day (`YYYY-MM-DD`) or a model name as a string; with group_by=api_key, the key id (an integer)."""


class UsageRowSerializer(serializers.Serializer[Any]):
    group = UsageGroupField(
        help_text="group_by=day: the tenant-local date; model: the model name; api_key: the key id (an integer); "
        "service_tier: default, priority, flex or batch."
    )
    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    cache_write_1h_tokens = serializers.IntegerField(help_text="Part of cache_write_tokens.")
    reasoning_tokens = serializers.IntegerField(help_text="Part of output_tokens.")
    cost = serializers.DecimalField(max_digits=38, decimal_places=18)
    unpriced_requests = serializers.IntegerField()


class UsageOutSerializer(serializers.Serializer[Any]):
    results = UsageRowSerializer(many=True)
    currency = serializers.CharField()
    group_by = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
