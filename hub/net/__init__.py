"""Outbound calls under the hub's rules: URLs fetched and posted only to public addresses,
within bounds, and the backoff between attempts."""
