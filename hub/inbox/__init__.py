"""The inbox: what arrives at a channel's signed callback URLs becomes a delivery (the raw
bytes, kept) and the callback.received event it publishes."""
