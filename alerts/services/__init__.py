"""Alert services, one concept per module; every public name is re-exported here.

- measures.py: what the five rule kinds (quota, spend, balance, forecast, spike) have crossed
- evaluate.py: claiming an alert once per rule x threshold x period, and its deliveries
- deliveries.py: the delivery state machine (claim with a lease, send, retry, fail)
- rules.py, channels.py: the portal's writes, each audited here (actor / actor_label)
"""

from alerts.services.channels import (
    notification_channel_create,
    notification_channel_delete,
    notification_channel_send_test,
    notification_channel_update,
)
from alerts.services.deliveries import (
    LEASE,
    MAX_ATTEMPTS,
    SWEEP_GRACE,
    DeliveryOutcome,
    _backoff,
    _claim_delivery,
    alert_deliveries_due,
    alert_deliveries_prune,
    alert_delivery_send,
)
from alerts.services.errors import AlertConfigError
from alerts.services.evaluate import Evaluation, alerts_evaluate, alerts_evaluate_recorded
from alerts.services.measures import PACE_DAYS, Crossing
from alerts.services.rules import (
    RULES_MEMO_SECONDS,
    alert_rule_create,
    alert_rule_delete,
    alert_rule_set_enabled,
    alert_rule_update,
    tenant_has_rules,
    tenants_with_rules,
)

__all__ = [
    "LEASE",
    "MAX_ATTEMPTS",
    "PACE_DAYS",
    "RULES_MEMO_SECONDS",
    "SWEEP_GRACE",
    "AlertConfigError",
    "Crossing",
    "DeliveryOutcome",
    "Evaluation",
    "_backoff",
    "_claim_delivery",
    "alert_deliveries_due",
    "alert_deliveries_prune",
    "alert_delivery_send",
    "alert_rule_create",
    "alert_rule_delete",
    "alert_rule_set_enabled",
    "alert_rule_update",
    "alerts_evaluate",
    "alerts_evaluate_recorded",
    "notification_channel_create",
    "notification_channel_delete",
    "notification_channel_send_test",
    "notification_channel_update",
    "tenant_has_rules",
    "tenants_with_rules",
]
