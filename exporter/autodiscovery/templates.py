"""Autodiscovery check templates: parsing, template variables, triggers and the safety checks.

A template says how to scrape one container's metrics endpoint. It comes from (highest
precedence first):

1. the pod annotation `kubebridge.io/<container>.check` (JSON or YAML), for that container;
2. the conventional `prometheus.io/scrape: "true"` (+ `prometheus.io/port`, `/path`, `/scheme`)
   annotations, for the container declaring that port (else the first container with a port);
3. a per-image template from a template store (`exporter.autodiscovery.stores`), keyed by the image's
   short name (`nginx` for `registry.example.com/team/nginx:1.27@sha256:...`), for every container
   of that image.

A pod annotation is untrusted input: the only host a template may name is the pod's own IP
(`%%host%%`), a hostNetwork pod's kubelet ports and kubebridge's own port are refused, and a
template cannot set or rewrite the identity labels (namespace, pod, container, the pod join).
"""
from __future__ import annotations

import difflib
import functools
import json
import re
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping, Sequence

import yaml
from yarl import URL

from exporter import relabel
from exporter.configvalues import duration
from exporter.errors import ConfigError
from exporter.expfmt import LABEL_NAME
from exporter.jsonshape import obj, objs

# ASCII digits only: str.isdigit() admits "²" (int() then raises) and "١٠٢٥٠" (int() reads 10250).
_PORT = re.compile(r"[0-9]{1,5}\Z")
_ANNOTATION = re.compile(r"^kubebridge\.io/(.+)\.check$")
PROM_SCRAPE, PROM_PORT, PROM_PATH, PROM_SCHEME = (
    "prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path", "prometheus.io/scheme")
VARIABLES = ("host", "port", "port_<name>", "kube_namespace", "kube_pod_name", "kube_container_name")
_VAR = re.compile(r"%%([^%]*)%%")
# Labels a template may not set or rewrite: they say which pod a series belongs to.
RESERVED = re.compile(r"namespace|pod|container|node|cluster|collector|workload|workload_kind|label_.*|__.*")
# The kubelet's ports (secure, read-only, healthz): never a target on a hostNetwork pod's IP.
KUBELET_PORTS = frozenset({10248, 10250, 10255})
MAX_TEXT = 16 << 10  # characters in one annotation's template
_KEYS = ("url", "scheme", "host", "port", "path", "interval", "timeout", "labels", "relabel_configs",
         "insecure_skip_verify")
_ALIASES = {"openmetrics_endpoint": "url", "prometheus_url": "url",  # DataDog instance keys
            "metric_relabel_configs": "relabel_configs"}
_URL = re.compile(r"^(?P<scheme>[^:/]+)://(?P<host>\[[^\]]*\]|[^/:?#]*)(?::(?P<port>[^/?#]*))?"
                  r"(?P<path>[/?].*)?$")


class TemplateError(ValueError):
    """A template that cannot be used; the message says why."""


@dataclass(frozen=True)
class Template:
    """A parsed, not yet rendered template (string fields may hold `%%variables%%`)."""

    scheme: str = "http"
    host: str = "%%host%%"
    port: str = "%%port%%"
    path: str = "/metrics"
    interval: float = 0.0   # 0: scrape on every /metrics scrape
    timeout: float = 0.0    # 0: the collector's `target_timeout`
    labels: tuple[tuple[str, str], ...] = ()
    rules: tuple[relabel.Rule, ...] = ()
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class PodContext:
    """What the variables of one container render to, and what a target may point at."""

    ip: str
    namespace: str
    pod: str
    container: str
    ports: tuple[tuple[str, int], ...] = ()  # the container's declared (name, port), in order
    host_network: bool = False
    denied_ports: frozenset[int] = frozenset()  # kubebridge's own port (hostNetwork pods, sidecar)


@dataclass(frozen=True)
class Endpoint:
    """A rendered template: one target's URL and settings."""

    url: str
    port: int
    interval: float
    timeout: float
    labels: tuple[tuple[str, str], ...]
    rules: tuple[relabel.Rule, ...]
    insecure_skip_verify: bool


def loads(text: str) -> Any:
    """JSON or YAML text -> a document (YAML's safe loader; JSON first for exact errors)."""
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise TemplateError(f"not valid JSON or YAML{where}: {getattr(exc, 'problem', exc)}") from None


@functools.lru_cache(maxsize=1024)
def parse_text(text: str) -> Template:
    """An annotation's or a store's text -> Template (TemplateError says what is wrong). Cached:
    every pod index refresh re-reads every annotation."""
    if len(text) > MAX_TEXT:
        raise TemplateError(f"{len(text)} characters: a template is at most {MAX_TEXT}")
    return parse(loads(text))


def parse(doc: Any) -> Template:
    """A loaded document -> Template. A one-element list is accepted (a check's `instances`)."""
    if isinstance(doc, list):
        if len(doc) != 1:
            raise TemplateError(f"exactly one instance per container is supported, got {len(doc)}")
        doc = doc[0]
    if not isinstance(doc, Mapping):
        raise TemplateError(f"must be a mapping, not {type(doc).__name__}")
    raw = {_ALIASES.get(str(k), str(k)): v for k, v in doc.items()}
    for key in raw:
        if key not in _KEYS:
            hint = difflib.get_close_matches(key, _KEYS, n=1)
            raise TemplateError(f"unknown key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    fields: dict[str, Any] = {}
    if "url" in raw:
        if any(k in raw for k in ("scheme", "host", "port", "path")):
            raise TemplateError("give either url or scheme/host/port/path, not both")
        fields.update(_split_url(_text(raw["url"], "url")))
    for key in ("scheme", "host", "port", "path"):
        if key in raw:
            fields[key] = _text(raw[key], key)
    for key in ("interval", "timeout"):
        if key in raw:
            try:
                fields[key] = duration(raw[key], key)
            except ConfigError as exc:
                raise TemplateError(str(exc)) from None
    if "insecure_skip_verify" in raw:
        if not isinstance(raw["insecure_skip_verify"], bool):
            raise TemplateError("insecure_skip_verify: must be true or false")
        fields["insecure_skip_verify"] = raw["insecure_skip_verify"]
    fields["labels"] = _labels(raw.get("labels"))
    try:
        fields["rules"] = relabel.parse_rules(raw.get("relabel_configs"), "relabel_configs")
    except ConfigError as exc:
        raise TemplateError(str(exc)) from None
    tmpl = Template(**fields)
    for key in ("scheme", "host", "port", "path"):
        check_variables(getattr(tmpl, key), key)
    for name, value in tmpl.labels:
        check_variables(value, f"labels.{name}")
    return tmpl


def _text(value: Any, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TemplateError(f"{key}: must be a string")
    return str(value)


def _split_url(url: str) -> dict[str, str]:
    m = _URL.match(url)
    if m is None:
        raise TemplateError(f"url: not scheme://host[:port]/path: {url!r}")
    out = {"scheme": m["scheme"], "host": m["host"].strip("[]"), "path": m["path"] or "/"}
    if m["port"] is not None:
        out["port"] = m["port"]
    else:
        out["port"] = "443" if m["scheme"] == "https" else "80"
    return out


def _labels(raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise TemplateError("labels: must be a mapping of label name to value")
    out = []
    for name, value in raw.items():
        name = str(name)
        if not LABEL_NAME.match(name):
            raise TemplateError(f"labels: {name!r} is not a valid label name")
        if RESERVED.fullmatch(name):
            raise TemplateError(f"labels: {name!r} is set by kubebridge and cannot be overridden")
        out.append((name, _text(value, f"labels.{name}")))
    return tuple(sorted(out))


def check_variables(text: str, where: str) -> None:
    """Reject unknown `%%variables%%` and a stray `%%`."""
    for name in _VAR.findall(text):
        if name not in VARIABLES and not (name.startswith("port_") and len(name) > 5):
            raise TemplateError(f"{where}: unknown template variable %%{name}%% "
                                f"(known: {', '.join('%%' + v + '%%' for v in VARIABLES)})")
    if "%%" in _VAR.sub("", text):
        raise TemplateError(f"{where}: unterminated template variable in {text!r}")


def render_text(text: str, ctx: PodContext, where: str) -> str:
    """Substitute the variables of one container."""
    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "host":
            return ctx.ip
        if name == "port":
            if not ctx.ports:
                raise TemplateError(f"{where}: %%port%% but container {ctx.container!r} declares no port")
            return str(ctx.ports[0][1])
        if name.startswith("port_"):
            port = dict(ctx.ports).get(name[5:])
            if port is None:
                raise TemplateError(f"{where}: %%{name}%% but container {ctx.container!r} declares no "
                                    f"port named {name[5:]!r}")
            return str(port)
        return {"kube_namespace": ctx.namespace, "kube_pod_name": ctx.pod,
                "kube_container_name": ctx.container}[name]
    check_variables(text, where)
    return _VAR.sub(value, text)


def render(tmpl: Template, ctx: PodContext, default_timeout: float) -> Endpoint:
    """Render a template for one container and apply the safety checks."""
    if not ctx.ip:
        raise TemplateError("the pod has no IP yet")
    if tmpl.host not in ("%%host%%", ctx.ip):
        raise TemplateError(f"host {tmpl.host!r} refused: a template may only name the pod's own IP "
                            "(%%host%%)")
    scheme = render_text(tmpl.scheme, ctx, "scheme").lower()
    if scheme not in ("http", "https"):
        raise TemplateError(f"scheme {scheme!r}: must be http or https")
    raw_port = render_text(tmpl.port, ctx, "port")
    if not _PORT.match(raw_port) or not 0 < int(raw_port) < 65536:
        raise TemplateError(f"port {raw_port!r}: must be a number from 1 to 65535")
    port = int(raw_port)
    if port in ctx.denied_ports:
        raise TemplateError(f"port {port} refused on {ctx.ip}: kubebridge's own port")
    if ctx.host_network and port in KUBELET_PORTS:
        raise TemplateError(f"port {port} refused on {ctx.ip}: a kubelet port, on a hostNetwork pod (the "
                            "node's IP)")
    path = render_text(tmpl.path, ctx, "path")
    if not path.startswith("/"):
        path = "/" + path
    path, _, query = path.partition("?")
    url = URL.build(scheme=scheme, host=ctx.ip, port=port, path=path, query_string=query, encoded=False)
    labels = tuple((n, render_text(v, ctx, f"labels.{n}")) for n, v in tmpl.labels)
    return Endpoint(str(url), port, tmpl.interval, tmpl.timeout or default_timeout, labels,
                    tmpl.rules, tmpl.insecure_skip_verify)


def image_name(image: str) -> str:
    """`registry:5000/team/nginx:1.27@sha256:...` -> `nginx` (digest, tag and path stripped)."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


@dataclass(frozen=True)
class Candidate:
    """One container a trigger selected: a template, or why there is none."""

    container: str
    trigger: str       # annotation | prometheus_io | the store's name (file, etcd, ...)
    where: str         # the annotation key or the store key, for messages
    template: Template | None = None
    error: str = ""
    text: str = ""     # the raw input (errors are reported once per distinct input)


def containers(item: Mapping[str, Any]) -> list[tuple[str, str, tuple[tuple[str, int], ...]]]:
    """(name, image, declared (port name, port)) of a PodList item's containers."""
    out = []
    for c in objs(obj(item.get("spec")).get("containers"))[0]:  # (odd JSON types read as absent)
        ports = tuple((str(p.get("name", "")), int(p["containerPort"])) for p in objs(c.get("ports"))[0]
                      if str(p.get("protocol", "TCP")) == "TCP" and isinstance(p.get("containerPort"), int))
        out.append((str(c.get("name", "")), str(c.get("image", "")), ports))
    return out


def candidates(item: Mapping[str, Any], images: Mapping[str, tuple[str, Template]], *,
               annotations: bool = True, prometheus: bool = True) -> list[Candidate]:
    """Every container of a pod that asks to be scraped, by trigger precedence (a disabled
    trigger is skipped, so the next one applies)."""
    notes = obj(obj(item.get("metadata")).get("annotations"))
    conts = containers(item)
    names = [c[0] for c in conts]
    found: dict[str, Candidate] = {}
    for key, text in sorted(notes.items()):
        m = _ANNOTATION.match(key)
        if m is None or not annotations:
            continue
        if m.group(1) not in names:
            found[m.group(1)] = Candidate(m.group(1), "annotation", key, error=f"no container named "
                                          f"{m.group(1)!r} in the pod", text=str(text))
            continue
        try:
            found[m.group(1)] = Candidate(m.group(1), "annotation", key, parse_text(str(text)),
                                          text=str(text))
        except TemplateError as exc:
            found[m.group(1)] = Candidate(m.group(1), "annotation", key, error=str(exc), text=str(text))
    prom = _prometheus(notes, conts) if prometheus else None
    if prom is not None and prom.container not in found:
        found[prom.container] = prom
    for name, image, _ in conts:
        hit = images.get(image_name(image))
        if name not in found and hit is not None:
            found[name] = Candidate(name, hit[0], f"{hit[0]}:{image_name(image)}", hit[1])
    return [found[n] for n in sorted(found)]


def _prometheus(annotations: Mapping[str, Any], conts: Sequence[tuple[str, str, tuple]]) -> Candidate | None:
    if str(annotations.get(PROM_SCRAPE, "")) != "true":
        return None
    text = json.dumps({k: annotations[k] for k in (PROM_SCRAPE, PROM_PORT, PROM_PATH, PROM_SCHEME)
                       if k in annotations}, sort_keys=True)
    port = str(annotations.get(PROM_PORT, "")).strip()
    with_ports = [c for c in conts if c[2]]
    chosen = next((c for c in conts if port and any(str(p) == port for _, p in c[2])),
                  with_ports[0] if with_ports else (conts[0] if conts else None))
    if chosen is None:
        return None
    where = PROM_SCRAPE
    if port and not (_PORT.match(port) and 0 < int(port) < 65536):
        return Candidate(chosen[0], "prometheus_io", PROM_PORT, error=f"not a port number: {port!r}",
                         text=text)
    if not port and not chosen[2]:
        return Candidate(chosen[0], "prometheus_io", where, error="no prometheus.io/port and no declared "
                         "container port", text=text)
    doc = {"scheme": str(annotations.get(PROM_SCHEME, "http")), "port": port or "%%port%%",
           "path": str(annotations.get(PROM_PATH, "/metrics")) or "/metrics"}
    try:
        return Candidate(chosen[0], "prometheus_io", where, parse(doc), text=text)
    except TemplateError as exc:
        return Candidate(chosen[0], "prometheus_io", where, error=str(exc), text=text)
