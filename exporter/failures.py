"""What a source's failure reads as: one reason per error, and one log line per change.

Every error a collection raises is exactly one of `REASONS`:
- `connect`: no intact answer arrived (refused, reset before or during the body, broken chunked
  encoding or truncated body, TLS handshake or certificate failure, DNS);
- `timeout`: no complete answer within the budget (hung, or dripping too slowly);
- `http_status`: the upstream answered with a status that is not success (5xx, 3xx refused,
  a body over the size cap);
- `parse`: a complete answer that is not what the source reads (empty, garbage, wrong JSON
  types, undecodable compression);
- `not_permitted`: 401/403 (managed control planes refuse some endpoints: not an outage);
- `no_data`: the endpoint is legitimately absent (404, API disabled): not a failure;
- `internal`: anything else, which is a bug of ours: logged with its traceback.
Expected failures are logged on ONE line without a traceback, once when the reason changes
and then at most once per `repeat` seconds per source (with how many were not logged), and
once more when the source recovers.
"""
from __future__ import annotations

import logging
import time

import aiohttp
from aiohttp.http_exceptions import HttpProcessingError

from exporter.errors import NoDataError, NotPermittedError, ParseError, describe
from exporter.upstream import UpstreamError

REASONS = ("connect", "timeout", "http_status", "parse", "not_permitted", "no_data", "internal")
# The source status each reason reads as (kubebridge_source_status{status}).
STATUS = {"not_permitted": "not_permitted", "no_data": "no_data"}


def classify(exc: BaseException) -> str:
    """The one reason an error reads as (see the module docstring)."""
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return classify(exc.exceptions[0])  # a TaskGroup's: its first leaf
    if isinstance(exc, NotPermittedError):
        return "not_permitted"
    if isinstance(exc, NoDataError):
        return "no_data"
    if isinstance(exc, TimeoutError):  # (aiohttp's ServerTimeoutError is one)
        return "timeout"
    if isinstance(exc, UpstreamError):
        return "http_status"
    if isinstance(exc, aiohttp.ClientPayloadError):
        # The body broke off: reset mid-body, bad chunked framing, short Content-Length.
        return "connect"
    if isinstance(exc, aiohttp.ClientResponseError):
        if isinstance(exc.__cause__, HttpProcessingError):
            # Not a status the upstream sent: aiohttp could not read its HTTP framing (a bad
            # status line, broken chunked encoding arriving with the head).
            return "connect"
        return "parse" if isinstance(exc, aiohttp.ContentTypeError) else "http_status"
    if isinstance(exc, (aiohttp.ClientConnectionError, OSError, EOFError)):
        # (ssl errors are OSErrors; asyncio's IncompleteReadError is an EOFError)
        return "connect"
    if isinstance(exc, (ParseError, ValueError)):  # (json and UnicodeDecodeError are ValueErrors)
        return "parse"
    return "internal"


class FailureLog:
    """One source's failure log lines (`what`: "collector cadvisor", "pod index"): see the
    module docstring."""

    def __init__(self, logger: logging.Logger, what: str, repeat: float = 300.0) -> None:
        self.log = logger
        self.what = what
        self.repeat = repeat
        self._reason = ""
        self._logged = 0.0
        self._quiet = 0  # failures of the current reason not logged

    def failed(self, reason: str, exc: BaseException) -> None:
        """A collection failed for `reason`."""
        now = time.monotonic()
        if reason == self._reason and now - self._logged < self.repeat:
            self._quiet += 1
            return
        more = f"; {self._quiet} more since" if self._quiet and reason == self._reason else ""
        self._reason, self._logged, self._quiet = reason, now, 0
        text = describe(exc)[:300]  # one line, bounded, without object reprs
        if reason == "internal":
            self.log.error("%s failed: internal (%s)%s", self.what, text, more, exc_info=exc)
        elif reason == "no_data":
            self.log.debug("%s: no data (%s)%s", self.what, text, more)
        elif reason == "not_permitted":
            self.log.info("%s: not permitted (%s)%s", self.what, text, more)
        else:
            self.log.warning("%s: %s (%s)%s", self.what, reason, text, more)

    def ok(self) -> None:
        """A collection succeeded: say so once after failures."""
        if self._reason and self._reason != "no_data":
            self.log.info("%s: ok again (after %s)", self.what, self._reason)
        self._reason, self._quiet = "", 0
