"""Outgoing webhooks: endpoints, the outbox, Standard Webhooks signing, delivery with retries."""
