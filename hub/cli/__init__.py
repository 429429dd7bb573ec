"""The hub command: serve, sandbox, channel, watch, submit, keys."""
