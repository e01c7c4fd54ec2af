"""The webhooks domain, one import for callers: endpoints, the outbox, and delivery."""

from shared.webhooks.delivery import Starts, attempt_key, deliver, deliver_many
from shared.webhooks.endpoints import (
    EVENT_TYPES,
    EndpointWithSecret,
    create_endpoint,
    default_secret,
    delete_endpoint,
    get_endpoint,
    list_endpoints,
    rotate_secret,
    update_endpoint,
    validate_callback,
)
from shared.webhooks.outbox import (
    continue_endpoints,
    delivery_dict,
    due_deliveries,
    emit,
    enqueue_deliveries,
    list_deliveries,
    list_events,
    redeliver,
    send_test,
)

__all__ = [
    "EVENT_TYPES",
    "EndpointWithSecret",
    "Starts",
    "attempt_key",
    "create_endpoint",
    "continue_endpoints",
    "default_secret",
    "deliver",
    "deliver_many",
    "delete_endpoint",
    "delivery_dict",
    "due_deliveries",
    "emit",
    "enqueue_deliveries",
    "get_endpoint",
    "list_deliveries",
    "list_endpoints",
    "list_events",
    "redeliver",
    "rotate_secret",
    "send_test",
    "update_endpoint",
    "validate_callback",
]
