"""Typed errors, each mapped to an HTTP status and an OpenAI error type.

Anything a user, a client or a config file can get wrong raises one of these with a message
that names the bad value and, where there is one, the fix. `assert` is for internal invariants.
"""

from __future__ import annotations


class LocalseekError(Exception):
    """Base of every error localseek raises on purpose."""

    http_status: int = 500
    error_type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def to_openai(self) -> dict:
        """The error in OpenAI's JSON shape."""
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(LocalseekError):
    """The request is malformed or asks for something impossible (HTTP 400)."""

    http_status = 400
    error_type = "invalid_request_error"


class ContextLengthError(InvalidRequestError):
    """Prompt (plus requested output) does not fit the model's context or the KV pool."""

    code = "context_length_exceeded"


class AuthenticationError(LocalseekError):
    http_status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(LocalseekError):
    http_status = 403
    error_type = "permission_error"


class NotFoundError(LocalseekError):
    """Unknown model id or route (HTTP 404)."""

    http_status = 404
    error_type = "not_found_error"
    code = "model_not_found"


class PayloadTooLargeError(InvalidRequestError):
    http_status = 413
    code = "payload_too_large"


class OverloadedError(LocalseekError):
    """Refused for load, at once, with the seconds after which a retry is likely to succeed."""

    http_status = 429
    error_type = "rate_limit_error"
    code = "server_overloaded"

    def __init__(self, message: str, *, retry_after: float, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after = max(0.0, retry_after)


class RateLimitError(OverloadedError):
    """A per-key limit was exceeded."""

    code = "rate_limit_exceeded"


class UpstreamError(LocalseekError):
    """Every eligible upstream failed (gateway)."""

    http_status = 502
    error_type = "upstream_error"


class ServiceUnavailableError(LocalseekError):
    http_status = 503
    error_type = "service_unavailable"


class DrainingError(ServiceUnavailableError):
    """The server is shutting down: it finishes what it admitted and takes nothing new (503)."""

    code = "server_draining"

    def __init__(self, message: str, *, retry_after: float):
        super().__init__(message)
        self.retry_after = max(0.0, retry_after)


class ConfigError(LocalseekError):
    """A configuration value is invalid; raised at start, naming the field."""

    http_status = 500
    error_type = "config_error"


class ModelLoadError(LocalseekError):
    """A model path or file cannot be loaded (missing, corrupt, unsupported)."""

    error_type = "model_load_error"


class UnsupportedModelError(ModelLoadError):
    """The architecture, quantization type or format is not supported; the message names it."""
