"""Outbound webhooks: endpoints that get a channel's or task's events, signed per Standard
Webhooks, and the dispatcher that sends them from the durable outbox."""
