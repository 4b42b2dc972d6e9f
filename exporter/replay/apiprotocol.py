"""Wire details of kube-apiserver that the replay apiserver reproduces.

Kept apart from the server so they are easy to compare with the real thing: `Status`
error objects (401/403/404/409/410), the authorizer's 403 message, the healthz/livez/readyz
text format of k8s.io/apiserver's healthz handler, `/version` and the deprecated
ComponentStatus list.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping

from aiohttp import web
from multidict import MultiMapping

from exporter.replay.encoding import go_json

JSON_TYPE = "application/json"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
# Served to anonymous clients too (system:public-info-viewer): a MISSING token is fine
# there, a WRONG token is still a 401 (authentication fails before authorization).
PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")
_CHECK = re.compile(r'^kubernetes_healthcheck\{name="([^"]+)",type="([a-z]+)"\}', re.M)
_BUILD = re.compile(r"^kubernetes_build_info\{(.*)\} ", re.M)
_LABEL = re.compile(r'([a-zA-Z_]+)="([^"]*)"')
# The apiserver registers these first; the remaining checks follow in capture order.
_FIRST = ("ping", "log", "etcd")
_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
          "DELETE": "delete"}


def truthy(value: str | None) -> bool:
    """A boolean query parameter as Go's strconv.ParseBool reads it (clients send `True`)."""
    return value in ("1", "t", "T", "true", "TRUE", "True")


def status_object(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    """A `Status` failure object, as the apiserver builds it (also a watch's ERROR event's object)."""
    body: dict = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": message, "reason": reason}
    if details is not None:
        body["details"] = {k: v for k, v in details.items() if v}
    body["code"] = code
    return body


def status(code: int, reason: str, message: str, details: dict | None = None) -> web.Response:
    """A `Status` failure response, as the apiserver writes it (compact JSON + newline)."""
    body = status_object(code, reason, message, details)
    return web.Response(status=code, body=go_json(body, newline=True), content_type=JSON_TYPE)


def unauthorized() -> web.Response:
    return status(401, "Unauthorized", "Unauthorized")


def forbidden(user: str, method: str, path: str, query: Mapping[str, str]) -> web.Response:
    """The RBAC authorizer's refusal for `path`, worded like the real one."""
    m = re.match(r"^/(?:api/v1|apis/([^/]+)/[^/]+)(?:/namespaces/([^/]+))?/([^/]+)(?:/([^/]+))?$", path)
    verb = _VERBS.get(method, method.lower())
    if m is None:  # a non-resource URL (/metrics, /livez, ...)
        return status(403, "Forbidden", f'forbidden: User "{user}" cannot {verb} path "{path}"', {})
    group, namespace, resource, name = m.groups()
    if verb == "get" and name is None:
        verb = "watch" if truthy(query.get("watch")) else "list"
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    what = f'{resource}.{group}' if group else resource
    named = f' "{name}"' if name else ""
    message = (f'{what}{named} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
               f'in API group "{group or ""}" {scope}')
    return status(403, "Forbidden", message, {"name": name, "group": group, "kind": resource})


def health_checks(slis: bytes) -> dict[str, list[str]]:
    """{healthz|livez|readyz: [check, ...]} from a recorded `/metrics/slis` payload."""
    checks: dict[str, list[str]] = {}
    for name, kind in _CHECK.findall(slis.decode()):
        checks.setdefault(kind, []).append(name)
    for names in checks.values():
        names.sort(key=lambda n: (_FIRST.index(n) if n in _FIRST else len(_FIRST)))
    return checks


def health(endpoint: str, checks: list[str], failing: Mapping[str, str],
           query: MultiMapping[str]) -> web.Response:
    """`/livez` and friends: `ok`, or the verbose listing; any failure is a verbose 500 whose
    failing lines withhold the reason (it is only logged server-side)."""
    excluded = set(",".join(query.getall("exclude", [])).split(","))
    lines, failed = [], False
    for check in checks:
        if check in excluded:
            lines.append(f"[+]{check} excluded: ok\n")
        elif check in failing:
            lines.append(f"[-]{check} failed: reason withheld\n")
            failed = True
        else:
            lines.append(f"[+]{check} ok\n")
    headers = {"Content-Type": TEXT_TYPE, "X-Content-Type-Options": "nosniff"}
    if failed:
        text = "".join(lines) + f"{endpoint} check failed\n"
        return web.Response(status=500, body=text.encode(), headers=headers)
    if "verbose" not in query:
        return web.Response(body=b"ok", headers=headers)
    return web.Response(body=("".join(lines) + f"{endpoint} check passed\n").encode(), headers=headers)


def version(metrics: bytes) -> bytes:
    """`/version` from the capture's own `kubernetes_build_info` (either label spelling)."""
    m = _BUILD.search(metrics.decode("utf-8", "replace"))
    labels = dict(_LABEL.findall(m.group(1))) if m else {}
    norm = {re.sub(r"_([a-z])", lambda x: x.group(1).upper(), k): v for k, v in labels.items()}
    order = ("major", "minor", "gitVersion", "gitCommit", "gitTreeState", "buildDate", "goVersion",
             "compiler", "platform")
    return json.dumps({k: norm.get(k, "") for k in order}, indent=2).encode() + b"\n"


def componentstatuses(unhealthy: dict[str, str]) -> bytes:
    """The deprecated `ComponentStatusList`. No real capture exists, so this is built in the
    API's documented shape; `unhealthy` maps component -> error message."""
    items = []
    for name in ("scheduler", "controller-manager", "etcd-0"):
        if name in unhealthy:
            cond = {"type": "Healthy", "status": "False", "message": unhealthy[name],
                    "error": unhealthy[name]}
        else:
            ok = '{"health":"true","reason":""}' if name.startswith("etcd") else "ok"
            cond = {"type": "Healthy", "status": "True", "message": ok}
        items.append({"kind": "ComponentStatus", "apiVersion": "v1",
                      "metadata": {"name": name, "creationTimestamp": None}, "conditions": [cond]})
    return go_json({"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": items},
                   newline=True)
