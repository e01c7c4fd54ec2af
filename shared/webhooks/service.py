"""The webhooks domain, one import for callers: endpoints, the outbox, and delivery."""

from shared.webhooks.delivery import deliver
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
    delivery_dict,
    due_deliveries,
    emit,
    give_up,
    list_deliveries,
    list_events,
    redeliver,
    send_test,
)

__all__ = [
    "EVENT_TYPES",
    "EndpointWithSecret",
    "create_endpoint",
    "default_secret",
    "deliver",
    "delete_endpoint",
    "delivery_dict",
    "due_deliveries",
    "emit",
    "get_endpoint",
    "give_up",
    "list_deliveries",
    "list_endpoints",
    "list_events",
    "redeliver",
    "rotate_secret",
    "send_test",
    "update_endpoint",
    "validate_callback",
]
