"""Background loops: each runs for the life of the hub, survives its own errors with
backoff, and reports its health for ``GET /healthz``."""
