"""Serializers that document the API in OpenAPI. Validation itself is metering/validation.py."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField(allow_null=True)


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class EventInSerializer(serializers.Serializer):
    request_id = serializers.CharField(max_length=128, help_text="Idempotency key, unique per tenant.")
    model = serializers.CharField(max_length=200)
    input_tokens = serializers.IntegerField(min_value=0, required=False, help_text="All prompt tokens.")
    output_tokens = serializers.IntegerField(min_value=0, required=False)
    cached_input_tokens = serializers.IntegerField(min_value=0, required=False, help_text="Part of input_tokens.")
    cache_write_tokens = serializers.IntegerField(min_value=0, required=False, help_text="Part of input_tokens.")
    input_text = serializers.CharField(required=False, help_text="Counted with tiktoken instead of input_tokens.")
    output_text = serializers.CharField(required=False, help_text="Counted with tiktoken instead of output_tokens.")
    timestamp = serializers.DateTimeField(required=False, help_text="ISO 8601 with a zone; default now.")
    latency_ms = serializers.IntegerField(min_value=0, required=False)
    api_key = serializers.CharField(required=False, help_text="Service tokens only: the consuming key or its id.")
    metadata = serializers.DictField(required=False, help_text="Flat, small.")


class EventOutSerializer(serializers.Serializer):
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


class BatchInSerializer(serializers.Serializer):
    events = EventInSerializer(many=True)


class BatchItemSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["accepted", "duplicate", "rejected"])
    id = serializers.IntegerField(required=False)
    request_id = serializers.CharField(required=False)
    error = serializers.DictField(required=False)


class BatchOutSerializer(serializers.Serializer):
    results = BatchItemSerializer(many=True)
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()


class TokenizeInSerializer(serializers.Serializer):
    model = serializers.CharField()
    text = serializers.CharField(allow_blank=True)


class TokenizeOutSerializer(serializers.Serializer):
    model = serializers.CharField()
    tokens = serializers.IntegerField()
    encoding = serializers.CharField()


@extend_schema_field({"oneOf": [{"type": "string"}, {"type": "integer"}]})
class UsageGroupField(serializers.Field):
    """A day (`YYYY-MM-DD`) or a model name as a string; with group_by=api_key, the key id (an integer)."""


class UsageRowSerializer(serializers.Serializer):
    group = UsageGroupField(
        help_text="group_by=day: the tenant-local date; model: the model name; api_key: the key id (an integer)."
    )
    requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    cached_input_tokens = serializers.IntegerField()
    cache_write_tokens = serializers.IntegerField()
    cost = serializers.DecimalField(max_digits=38, decimal_places=18)
    unpriced_requests = serializers.IntegerField()


class UsageOutSerializer(serializers.Serializer):
    results = UsageRowSerializer(many=True)
    currency = serializers.CharField()
    group_by = serializers.CharField()
    start = serializers.DateTimeField()
    end = serializers.DateTimeField()
