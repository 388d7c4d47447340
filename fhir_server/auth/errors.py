"""OAuth 2.0 error responses (RFC 6749 §5.2), raised by the authorization server."""

from __future__ import annotations


class OAuthError(Exception):
    """An OAuth error: `error` code, human description and HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, 401)


def invalid_grant(description: str) -> OAuthError:
    return OAuthError("invalid_grant", description, 400)


def invalid_request(description: str) -> OAuthError:
    return OAuthError("invalid_request", description, 400)


def invalid_scope(description: str) -> OAuthError:
    return OAuthError("invalid_scope", description, 400)
