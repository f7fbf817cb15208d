"""Errors the API answers, as exceptions carrying its code and field."""

from __future__ import annotations

from typing import Any, Dict, Optional, Type


class WarrenError(Exception):
    """An error answer from warren.

    ``code`` is the API's error code (``not_found``, ``bad_request``, ...);
    branch on it or on the subclass. ``field`` names the request field,
    query parameter or path at fault, when the server named one.
    """

    def __init__(self, message: str, code: str = "internal", status: int = 0, field: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.field = field

    def __str__(self) -> str:
        if self.field:
            return f"{self.message} ({self.code}, field {self.field})"
        return f"{self.message} ({self.code})"


class BadRequestError(WarrenError):
    """400: the request was invalid; ``field`` says which input."""


class AuthenticationError(WarrenError):
    """401: the API key was missing or wrong."""


class ForbiddenError(WarrenError):
    """403: the key may not do this."""


class NotFoundError(WarrenError):
    """404: no such sandbox, file, command or image."""


class ConflictError(WarrenError):
    """409: the sandbox's state does not allow this (exec while paused)."""


class TooLargeError(WarrenError):
    """413: the request body is over its limit."""


class RateLimitError(WarrenError):
    """429: a limit on work in flight was reached; try again later."""


class UnavailableError(WarrenError):
    """503: the node cannot serve this now."""


class StorageFullError(WarrenError):
    """507: the sandbox's disk is full."""


_BY_CODE: Dict[str, Type[WarrenError]] = {
    "bad_request": BadRequestError,
    "unauthorized": AuthenticationError,
    "forbidden": ForbiddenError,
    "not_found": NotFoundError,
    "conflict": ConflictError,
    "too_large": TooLargeError,
    "too_many_requests": RateLimitError,
    "unavailable": UnavailableError,
    "insufficient_storage": StorageFullError,
}

_CODE_BY_STATUS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict",
                   413: "too_large", 429: "too_many_requests", 503: "unavailable", 507: "insufficient_storage"}


def error_from(body: Any, status: int = 0) -> WarrenError:
    """Builds the exception for an error body ``{"error": {...}}`` (or its
    inner object), or for a bare status when the body is not the API's."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict) and err.get("code"):
        code = str(err["code"])
        cls = _BY_CODE.get(code, WarrenError)
        return cls(str(err.get("message", "")), code=code, status=status, field=err.get("field") or None)
    code = _CODE_BY_STATUS.get(status, "internal")
    text = body if isinstance(body, str) and body else f"HTTP {status}"
    return _BY_CODE.get(code, WarrenError)(text.strip(), code=code, status=status)
