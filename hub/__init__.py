"""The hub: signed callback URLs, durable intake, SSE fan-out."""

__version__ = "0.1.0"
