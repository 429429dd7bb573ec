"""What the hub refuses, in its own terms.

Domain code raises these; it never speaks HTTP. ``hub.web.errors`` maps each class to a
status and the JSON shape ``{"error": {"code", "message", "field"?}}`` in one table, so a
status is decided in one place.
"""

from __future__ import annotations


class HubError(Exception):
    """A request the hub will not do. ``code`` is the stable, machine-readable word;
    ``field`` names the input at fault where there is one."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after


class Malformed(HubError):
    """The request cannot be read at all: not JSON, a broken form, a bad length."""


class Unauthorized(HubError):
    """No credential, or one that is not valid here."""


class PaymentRequired(HubError):
    """It would cost more than the caller's budget allows."""


class Forbidden(HubError):
    """A valid credential that may not do this."""


class NotFound(HubError):
    """No such object, as far as this caller may know."""


class Conflict(HubError):
    """The object is not in a state that allows this."""


class Gone(HubError):
    """It existed, and has expired or been removed."""


class TooSlow(HubError):
    """The request took too long to arrive."""


class TooLarge(HubError):
    """More bytes than the hub accepts here."""


class Unsupported(HubError):
    """A media type this operation does not take."""


class Invalid(HubError):
    """A field holds a value the hub cannot use; ``field`` names it."""


class RateLimited(HubError):
    """Too many requests; come back after ``retry_after`` seconds."""


class Unavailable(HubError):
    """The hub cannot do it now (shutting down, the store in doubt); retry later."""


def invalid(field: str, message: str, code: str = "invalid_request") -> Invalid:
    """The field at fault, named in the message and on its own."""
    return Invalid(code, f"{field}: {message}", field=field)


def not_found(what: str) -> NotFound:
    return NotFound("not_found", f"{what} not found")
