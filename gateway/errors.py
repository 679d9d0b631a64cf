"""The gateway's exception tree.

Every error the gateway produces itself is one of these classes. The HTTP status and the
machine-readable error code live on the class; :func:`gateway.render.error_response` is the one
place that turns an instance into the JSON body and the RFC 6750 ``WWW-Authenticate`` header.
Code never branches on a message string: it catches a class.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    """Base of every error the gateway renders to a client."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "The gateway could not handle this request."
    # Headers every answer of this class carries (those given to one error add to them).
    default_headers: ClassVar[dict[str, str]] = {}

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        cause: str | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.details: dict[str, Any] = details or {}
        self.headers: dict[str, str] = {**self.default_headers, **(headers or {})}
        # Why, in the gateway's own words, for the operator's log line; never rendered.
        self.cause = cause
        super().__init__(self.message)


class InvalidRequest(GatewayError):
    """A body, header or parameter that cannot be understood (400)."""

    status = 400
    code = "invalid_request"
    default_message = "The request could not be understood."


class AuthenticationError(GatewayError):
    """Base of 401 answers: the credential does not identify anyone."""

    status = 401
    code = "invalid_token"


class InvalidToken(AuthenticationError):
    """Missing, malformed, unknown, revoked, badly signed or used-up credential."""

    default_message = "The access token is missing, malformed, unknown or revoked."


class TokenExpired(AuthenticationError):
    """A credential past its expiry (beyond the configured leeway)."""

    code = "token_expired"
    default_message = "The access token has expired. Refresh or reissue it."


class AuthorizationError(GatewayError):
    """Base of 403 answers: the credential is valid but may not do this."""

    status = 403
    code = "insufficient_scope"


class InsufficientScope(AuthorizationError):
    """The credential's kind or scopes do not allow this route."""

    default_message = "This token does not have permission for this operation."


class WrongUser(AuthorizationError):
    """A user-bound credential used on another user's path."""

    code = "wrong_user"
    default_message = "This token can only access data for its own user."


class ForbiddenHeader(AuthorizationError):
    """A header a backend may take as the request's real method or target
    (:data:`gateway.forward.headers.OVERRIDES`): 403 in both modes, which a forward-auth proxy
    passes on as a refusal (nginx ``auth_request`` turns a 400 into a 500)."""

    code = "forbidden_header"
    default_message = "This request carries a header that names another method or target."


class NotFound(GatewayError):
    """A path the gateway does not serve at all."""

    status = 404
    code = "not_found"
    default_message = "No route matches this path."


class UserNotFound(GatewayError):
    """Token issuance for a user outside the key's account."""

    status = 404
    code = "user_not_found"
    default_message = "No such user in this account."


class MethodNotAllowed(GatewayError):
    """A gateway-owned endpoint called with the wrong method."""

    status = 405
    code = "method_not_allowed"
    default_message = "This method is not allowed on this endpoint."


class Conflict(GatewayError):
    """A change the current state does not allow (409): rotating a key that a rotation already
    replaced."""

    status = 409
    code = "conflict"
    default_message = "The current state does not allow this change."


class RequestTimeout(GatewayError):
    """The client sent its body too slowly."""

    status = 408
    code = "request_timeout"
    default_message = "The request body did not arrive in time."


class PayloadTooLarge(GatewayError):
    """The request body exceeds the configured limit."""

    status = 413
    code = "payload_too_large"
    default_message = "The request body is larger than this gateway accepts."


class HeadersTooLarge(GatewayError):
    """The request headers exceed the configured limit."""

    status = 431
    code = "headers_too_large"
    default_message = "The request headers are larger than this gateway accepts."


class RateLimited(GatewayError):
    """Over a configured rate limit; carries ``Retry-After``."""

    status = 429
    code = "rate_limited"
    default_message = "Too many requests. Retry later."


class UpstreamUnavailable(GatewayError):
    """The backend refused the connection or failed mid-request."""

    status = 502
    code = "upstream_unavailable"
    default_message = "The upstream service is unavailable."


class ServiceUnavailable(GatewayError):
    """A dependency the decision needs is down; the gateway fails closed."""

    status = 503
    code = "service_unavailable"
    default_message = "A dependency of the gateway is unavailable. Retry later."


class UpstreamTimeout(GatewayError):
    """The backend did not answer within the configured timeout."""

    status = 504
    code = "upstream_timeout"
    default_message = "The upstream service did not answer in time."


class StoreUnavailable(ServiceUnavailable):
    """The credential store (Redis) could not be reached or timed out. Answered with
    ``Retry-After: 1``: most outages a client meets are a timeout or a failover of seconds."""

    default_message = "The credential store is unavailable. Retry later."
    default_headers: ClassVar[dict[str, str]] = {"Retry-After": "1"}
