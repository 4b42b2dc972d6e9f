"""Wire details of the kubelet's secure port that the replay server reproduces.

Kept apart from the server so the constants are easy to compare with the real kubelet:
content types, the bearer-token check, the 401/403/404 bodies and the /healthz output of
k8s.io/apiserver's healthz handler (which the kubelet uses for ping/log/syncloop).
"""

from __future__ import annotations

import hmac
from pathlib import Path

from aiohttp import web

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
HEALTHZ_CHECKS = ("ping", "log", "syncloop")


def text_response(status: int, body: str, *, nosniff: bool = False) -> web.Response:
    headers = {"Content-Type": TEXT_CONTENT_TYPE}
    if nosniff:  # set by Go's http.Error/http.NotFound and by the healthz handler
        headers["X-Content-Type-Options"] = "nosniff"
    return web.Response(status=status, body=body.encode("utf-8"), headers=headers)


def token_matches(request: web.Request, token_file: Path) -> bool:
    """`Authorization: Bearer <token>` equal to the token file's current (stripped) content.

    The file is read on every request so tests can rotate the token by rewriting it; a
    missing or empty file refuses everything. The scheme is matched case-insensitively,
    as the Kubernetes bearer-token authenticator does.
    """
    try:
        expected = token_file.read_text(encoding="utf-8").strip()
    except OSError:
        return False
    parts = request.headers.get("Authorization", "").split(" ")
    if not expected or len(parts) < 2 or parts[0].lower() != "bearer":
        return False
    return hmac.compare_digest(parts[1].strip().encode(), expected.encode())


def unauthorized() -> web.Response:
    # go-restful WriteErrorString: no Content-Type set, Go sniffs text/plain.
    return text_response(401, "Unauthorized")


def forbidden(path: str, user: str, method: str) -> web.Response:
    """The kubelet's authorizer refusal body (resource=nodes, subresource by path)."""
    if path.startswith("/stats"):
        subresource = "stats"
    elif path.startswith("/metrics"):
        subresource = "metrics"
    elif path.startswith("/logs"):
        subresource = "log"
    else:
        subresource = "proxy"
    verb = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "DELETE": "delete"}.get(
        method, method.lower()
    )
    return text_response(
        403, f"Forbidden (user={user}, verb={verb}, resource=nodes, subresource={subresource})"
    )


def not_found() -> web.Response:
    return text_response(404, "404 page not found\n", nosniff=True)


def healthz(request: web.Request, failing: dict[str, str]) -> web.Response:
    """/healthz: `ok`, the verbose form with `?verbose`, always verbose (500) on failure."""
    lines = []
    for check in HEALTHZ_CHECKS:
        if check in failing:
            # The real handler withholds the reason on this public endpoint.
            lines.append(f"[-]{check} failed: reason withheld\n")
        else:
            lines.append(f"[+]{check} ok\n")
    if failing:
        return text_response(500, "".join(lines) + "healthz check failed\n", nosniff=True)
    if "verbose" not in request.query:
        return text_response(200, "ok", nosniff=True)
    return text_response(200, "".join(lines) + "healthz check passed\n", nosniff=True)
