"""Security headers of every page the apps serve.

The Content-Security-Policy allows only this origin's own scripts, styles and images (no
inline script or style, no CDN), forms posting to this origin (plus the sign-in server when
it lives elsewhere), and no framing.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Response


def content_security_policy(form_targets: Iterable[str] = ()) -> str:
    """The CSP header value; `form_targets` are extra origins a form may lead to (sign-in
    redirects after a POST count as form navigation)."""
    targets = " ".join(["'self'", *sorted({t for t in form_targets if t})])
    return ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            f"connect-src 'self'; form-action {targets}; frame-ancestors 'none'; "
            "base-uri 'none'")


def protect(response: Response, form_targets: Iterable[str] = (),
            cache: str = "no-store") -> Response:
    """Add the security headers (and `Cache-Control`, no-store for pages with patient data)
    to a page response."""
    response.headers["Content-Security-Policy"] = content_security_policy(form_targets)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = cache
    return response
