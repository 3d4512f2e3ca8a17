"""Everything the sync and async clients share, written once.

Each operation is a *flow*: a generator that yields effects (send this request, open this
stream, read a chunk, sleep, hand a value to the caller) and gets their results back. It does
no network I/O and never sleeps by itself; `Client` runs flows with blocking httpx calls and
`AsyncClient` with awaited ones (see `_sync.py` and `_async.py`, a short driver loop each). So
request building, error parsing, the retry policy, pagination, long-polling, log following,
resumable downloads and SSE reconnection exist once.
"""

from __future__ import annotations

import builtins
import codecs
import json
import math
import os
import random
import re
import ssl
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Dict, Generator, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union
from urllib.parse import quote

import httpx

from ._errors import ConnectionFailed, PoolFull, SpoolError, WaitTimeout, error_from_response
from ._models import (
    TERMINAL_STATES,
    ArrayOutput,
    AttemptList,
    Event,
    Health,
    Job,
    JobArray,
    JobRetry,
    JobType,
    Output,
    OutputList,
    QueueInfo,
    dedup_json,
    format_datetime,
    retry_json,
)
from ._sse import SSEParser
from ._version import __version__

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8080"
#: The server holds a `?wait=` long-poll for at most this long.
MAX_WAIT_S = 60.0
#: A stream gets a keep-alive comment every 15 s; silence for longer than this is a dead connection.
STREAM_READ_TIMEOUT_S = 45.0

VerifyTypes = Union[bool, str, "os.PathLike[str]", ssl.SSLContext]
PathType = Union[str, "os.PathLike[str]"]
#: A submit's `retry`: a `JobRetry`, a mapping of its fields, or a number of attempts.
RetryArg = Union[JobRetry, Mapping[str, Any], int]
#: A submit's `dedup`: ``"queued"``, or ``{"succeeded_within_s": S}``.
DedupArg = Union[str, Mapping[str, Any]]
#: The most tasks one job array may have.
MAX_ARRAY_SIZE = 10_000
#: The connection pool of a client made without `limits`: no cap on connections (each long-poll
#: and event stream holds one while it runs, so a cap would make the one past it wait for a
#: connection that may never come free), and up to 20 idle ones kept alive for 5 s.
DEFAULT_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=20, keepalive_expiry=5.0)
#: How long a submit (and the other requests with an Idempotency-Key) keeps trying through a
#: server restart — refused or dropped connections, 503 — before raising (`restart_timeout`).
RESTART_TIMEOUT_S = 30.0
#: How long what follows a job (`wait`, `logs(follow=True)`, `wait_array`, `watch_array`) rides
#: out a server that cannot be reached or answers 503 (`reconnect_timeout`), as the CLI does.
FOLLOW_RECONNECT_S = 120.0
#: While riding out a restart, ask again at least this often (unless the server says Retry-After).
RIDE_OUT_STEP_S = 1.0


# --- effects -------------------------------------------------------------------------------


@dataclass
class RequestSpec:
    """One HTTP request, before the driver turns it into an httpx request."""

    method: str
    path: str
    params: Optional[Dict[str, str]] = None
    headers: Dict[str, str] = field(default_factory=dict)
    body: Optional[bytes] = None
    #: Safe to send again after a failure that may have reached the server.
    idempotent: bool = True
    #: Retry 429 and 503 answers (off where the caller wants to see them, e.g. /healthz).
    retry_status: bool = True
    #: Read timeout for this request (long-polls and streams), instead of the client's.
    read_timeout: Optional[float] = None
    #: Once `retries` are spent, keep trying for up to this many seconds from the first failure
    #: while the server looks like it is restarting (refused connections, dropped ones where
    #: resending is safe, 503, and a proxy's 502/504 where resending is safe); None: no limit.
    ride_out: Optional[float] = 0.0


@dataclass
class Send:
    """Send a request and read the whole answer; the result is an `httpx.Response`."""

    spec: RequestSpec


@dataclass
class Open:
    """Send a request and return the `httpx.Response` before its body is read."""

    spec: RequestSpec
    raw: bool = False  # read the body undecoded (no Content-Encoding decoding): downloads


@dataclass
class Read:
    """The next chunk of an open response's body; b"" at its end."""

    response: httpx.Response


@dataclass
class ReadAll:
    """The rest of an open response's body."""

    response: httpx.Response


@dataclass
class Close:
    response: httpx.Response


@dataclass
class Sleep:
    seconds: float


@dataclass
class Emit:
    """Hand a value to the caller of an iterator (list, events, logs --follow)."""

    value: Any


Effect = Union[Send, Open, Read, ReadAll, Close, Sleep, Emit]
Flow = Generator[Effect, Any, T]

# Failures where the request cannot have reached the server: always safe to retry. (Not
# httpx.PoolTimeout: that is the client's own pool being full, reported as `PoolFull` at once.)
NOT_SENT_ERRORS: Tuple[type, ...] = (httpx.ConnectError, httpx.ConnectTimeout)
# Failures of the transport that may be passing (a dropped connection, a timeout, a restart).
TRANSIENT_ERRORS: Tuple[type, ...] = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


# --- retry policy --------------------------------------------------------------------------


@dataclass
class RetryPolicy:
    """When to try a request again, and after how long.

    429 and 503 are retried for every request (the server did nothing with it), honouring
    `Retry-After` up to `max_retry_after` seconds; 502 and 504 (a proxy's) only for idempotent
    requests. A connection that could not be made is retried for every request; a failure after
    the request may have reached the server (reset, timeout) only for idempotent ones — GETs,
    and submits, which always carry an Idempotency-Key. Without `Retry-After` the wait is an
    exponential backoff with jitter: `backoff_base` doubling, up to `backoff_max`, times 0.5–1.
    """

    retries: int = 3
    backoff_base: float = 0.5
    backoff_max: float = 10.0
    max_retry_after: float = 60.0

    def backoff(self, attempt: int) -> float:
        step = min(self.backoff_max, self.backoff_base * 2.0 ** min(attempt, 30))  # 2.0 ** 1024 overflows
        return step * (0.5 + random.random() / 2)

    def status_delay(self, attempt: int, status: int, retry_after: Optional[float], idempotent: bool) -> Optional[float]:
        if attempt >= self.retries:
            return None
        if status in (429, 503) or (idempotent and status in (502, 504)):
            if retry_after is not None:
                return min(retry_after, self.max_retry_after)
            return self.backoff(attempt)
        return None

    def transport_delay(self, attempt: int, error: Exception, idempotent: bool) -> Optional[float]:
        if attempt >= self.retries:
            return None
        if isinstance(error, NOT_SENT_ERRORS) or (idempotent and isinstance(error, TRANSIENT_ERRORS)):
            return self.backoff(attempt)
        return None


# --- helpers -------------------------------------------------------------------------------


def ssl_verify(verify: VerifyTypes) -> Union[bool, ssl.SSLContext]:
    """httpx's `verify`: True/False, a context, or a CA bundle (file or folder) made into a context."""
    if isinstance(verify, (bool, ssl.SSLContext)):
        return verify
    location = os.fspath(verify)
    if os.path.isdir(location):
        return ssl.create_default_context(capath=location)
    return ssl.create_default_context(cafile=location)


def tls_verify_failure(error: BaseException) -> bool:
    """Whether a connection failed because the server's TLS certificate did not verify: no
    retry can change that, so it is reported at once."""
    seen = set()
    cause: Optional[BaseException] = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(error)


def check_header_value(name: str, value: str) -> None:
    """A ValueError naming `name` (never quoting the value: it may be a secret) unless `value`
    can go out as an HTTP header value: printable ASCII, with inner spaces and tabs."""
    if not isinstance(value, str):
        raise TypeError(f"{name} is a string, not {type(value).__name__}")
    for position, char in enumerate(value):
        if " " <= char <= "~" or char == "\t":
            continue
        if char in "\r\n":
            what = "a line break"
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            what = f"a control character (U+{ord(char):04X})"
        else:
            what = "a non-ASCII character"
        raise ValueError(f"{name} cannot be sent in an HTTP header: it holds {what} at position {position}")


def non_finite(value: Any, path: str = "") -> Optional[Tuple[str, float]]:
    """Where `value` holds a NaN or an infinity (which JSON cannot carry), and which: ("input.a[2]", nan)."""
    seen = set()

    def walk(item: Any, where: str) -> Optional[Tuple[str, float]]:
        if isinstance(item, float):
            return (where or "the value", item) if not math.isfinite(item) else None
        if isinstance(item, (dict, list, tuple)):
            if id(item) in seen:
                return None
            seen.add(id(item))
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                found = walk(child, f"{where}[{key}]" if not isinstance(item, dict) else (f"{where}.{key}" if where else str(key)))
                if found is not None:
                    return found
        return None

    return walk(value, path)


def job_path(job_id: str, *rest: str) -> str:
    if not isinstance(job_id, str) or not job_id:
        raise ValueError("a job id is a non-empty string")
    return "/".join(["/v1/jobs", quote(job_id, safe="")] + list(rest))


def array_path(array_id: str, *rest: str) -> str:
    if not isinstance(array_id, str) or not array_id:
        raise ValueError("an array id is a non-empty string")
    return "/".join(["/v1/arrays", quote(array_id, safe="")] + list(rest))


def array_spec(items: Optional[Sequence[Any]], range: Optional[Sequence[int]], fail_fast: bool) -> Dict[str, Any]:
    """A submit's `array` member: `items` (one task each) or `range`: (first, last), both
    included, or a Python `range` with step 1 (whose last number is stop - 1)."""
    if (items is None) == (range is None):
        raise ValueError("give items or range (not both)")
    spec: Dict[str, Any] = {}
    if items is not None:
        if isinstance(items, (str, bytes, Mapping)):
            raise TypeError("items is a sequence of task items (a list, a tuple, a range)")
        spec["items"] = list(items)
        if not 1 <= len(spec["items"]) <= MAX_ARRAY_SIZE:
            raise ValueError(f"an array has 1 to {MAX_ARRAY_SIZE} items, not {len(spec['items'])}")
    else:
        assert range is not None
        if isinstance(range, builtins.range):  # a Python range: its last number is stop - 1
            if range.step != 1 or len(range) == 0:
                raise ValueError("a Python range for an array must have step 1 and not be empty")
            range = (range.start, range.stop - 1)
        bounds = list(range)
        if len(bounds) != 2 or any(isinstance(b, bool) or not isinstance(b, int) for b in bounds):
            raise TypeError("range is (first, last): two integers, both included")
        first, last = bounds
        if not 0 <= last - first < MAX_ARRAY_SIZE:
            raise ValueError(f"range ({first}, {last}) must have first ≤ last and at most {MAX_ARRAY_SIZE} numbers")
        spec["range"] = [first, last]
    if fail_fast:
        spec["fail_fast"] = True
    return spec


def one_line(text: str) -> str:
    return " ".join(text.split())


def format_seconds(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"


def json_body(response: httpx.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError as error:
        raise SpoolError(
            response.status_code,
            title="Invalid response",
            detail=f"{response.request.method} {response.request.url} answered {response.status_code} "
            f"with a body that is not JSON: {one_line(response.content[:200].decode('utf-8', 'replace'))}",
        ) from error


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*$", re.IGNORECASE)


def parse_content_range(value: Optional[str]) -> Optional[Tuple[Optional[int], Optional[int], Optional[int]]]:
    """(first, last, total) from `bytes a-b/n` or `bytes */n`; None when it does not parse."""
    if not value:
        return None
    match = _CONTENT_RANGE.match(value)
    if not match:
        return None
    first, last, total = match.groups()
    return (
        int(first) if first is not None else None,
        int(last) if last is not None else None,
        int(total) if total not in (None, "*") else None,
    )


def download_target(name: str, path: Optional[PathType]) -> Path:
    """Where `download` writes: `path`, or `path/name` when `path` is a folder (or ends with `/`),
    or `./basename` without a path."""
    parts = [p for p in name.split("/") if p]
    safe = bool(parts) and not any(p in (".", "..") for p in parts)
    if path is None:
        return Path(parts[-1] if parts else "output")
    text = os.fspath(path)
    target = Path(text)
    if target.is_dir() or text.endswith(("/", os.sep)):
        return target.joinpath(*parts) if safe else target / (parts[-1] if parts else "output")
    return target


# --- the shared client core ----------------------------------------------------------------


class ClientCore:
    """Configuration and every operation's flow; `Client` and `AsyncClient` add the I/O."""

    def __init__(
        self,
        url: Optional[str],
        token: Optional[str],
        *,
        timeout: Optional[float],
        retries: int,
        user_agent: Optional[str],
        max_retry_wait: float,
        restart_timeout: Optional[float] = RESTART_TIMEOUT_S,
        limits: Optional[httpx.Limits] = None,
    ) -> None:
        url = url or os.environ.get("SPOOL_URL") or DEFAULT_URL
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"the server URL must be http:// or https:// with a host, not {url!r}")
        if token is None:
            token = os.environ.get("SPOOL_TOKEN") or None
        if token is not None:
            if not isinstance(token, str):
                raise TypeError(f"token is a string, not {type(token).__name__}")
            # A token read from a file or a mounted secret keeps its newline: not part of it.
            token = token.strip() or None
        if token:
            check_header_value("token", token)
        if user_agent:
            check_header_value("user_agent", user_agent)
        if restart_timeout is not None and not restart_timeout >= 0:
            raise ValueError("restart_timeout is a number of seconds (0 or more), or None")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.restart_timeout = restart_timeout
        self._limits = limits if limits is not None else DEFAULT_LIMITS
        self._policy = RetryPolicy(retries=max(0, retries), max_retry_after=max_retry_wait)
        self._headers: Dict[str, str] = {
            "User-Agent": user_agent or f"spool-client/{__version__} python-httpx/{httpx.__version__}",
            "Accept": "application/json",
        }
        # What no error message may show: the token, also as httpx and Python quote it.
        self._secrets: List[str] = []
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
            self._secrets = sorted({token, repr(token)[1:-1], repr(token.encode())[2:-1]}, key=len, reverse=True)
        #: The clock of waits and ride-outs (replaceable in tests).
        self._clock: Callable[[], float] = time.monotonic

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"  # never the token

    # -- request plumbing --

    def _request_args(self, spec: RequestSpec) -> Dict[str, Any]:
        timeout: Union[httpx.Timeout, float, None] = self.timeout
        if spec.read_timeout is not None:
            timeout = httpx.Timeout(self.timeout, read=spec.read_timeout)
        return {
            "method": spec.method,
            "url": spec.path,
            "params": spec.params,
            "headers": spec.headers,
            "content": spec.body,
            "timeout": timeout,
        }

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "[token]")
        return text

    def _connection_failed(self, spec: RequestSpec, error: Exception, failing_for: Optional[float] = None) -> ConnectionFailed:
        what = self._scrub(one_line(str(error))) or type(error).__name__
        verb = "could not connect to" if isinstance(error, NOT_SENT_ERRORS) else "connection failed for"
        after = f" (still failing after {failing_for:.0f} s)" if failing_for is not None and failing_for >= 1 else ""
        return ConnectionFailed(f"{verb} {spec.method} {self.url}{spec.path}: {what}{after}")

    def _fatal(self, spec: RequestSpec, error: Exception) -> Optional[Exception]:
        """The error to raise at once for a transport failure no retry can help; else None."""
        where = f"{spec.method} {self.url}{spec.path}"
        if isinstance(error, httpx.PoolTimeout):
            cap = self._limits.max_connections
            return PoolFull(
                f"no connection of this client's pool came free for {where} within its timeout: all "
                f"{cap if cap is not None else 'its'} connections (limits.max_connections) are in use, each long-poll, "
                f"log follow and event stream holding one; give the client higher limits= (or none) or run fewer at once"
            )
        if isinstance(error, httpx.LocalProtocolError):
            # Nothing was sent: the request itself cannot be written (a header value, say).
            return ValueError(f"{where} cannot be sent: {self._scrub(one_line(str(error))) or type(error).__name__}")
        if isinstance(error, httpx.ConnectError) and tls_verify_failure(error):
            return ConnectionFailed(f"TLS certificate verification failed for {where}: {self._scrub(one_line(str(error)))} "
                                    f"(verify= takes a CA bundle or an ssl.SSLContext)")
        return None

    def _ride_out_delay(self, spec: RequestSpec, attempt: int, failing_since: float, retry_after: Optional[float]) -> Optional[float]:
        """The wait before trying again through what looks like a server restart, while
        `spec.ride_out` lasts; None once it is spent."""
        budget = spec.ride_out
        if budget is not None and budget <= 0:
            return None
        elapsed = self._clock() - failing_since
        if budget is not None and elapsed >= budget:
            return None
        if retry_after is not None:
            delay = min(retry_after, self._policy.max_retry_after)
        else:
            delay = min(RIDE_OUT_STEP_S, self._policy.backoff(attempt))
        return max(0.0, delay if budget is None else min(delay, budget - elapsed))

    def _send(self, spec: RequestSpec, *, stream: bool = False, raw: bool = False, ok: Sequence[int] = ()) -> Flow[httpx.Response]:
        """Send with the retry policy; the answer, or a typed error. `ok` lists error statuses to return.

        `retries` tries again after a 429, a 503, a proxy's 502/504 and a failed connection
        (see `RetryPolicy`); after them, a request with `ride_out` keeps trying through what
        looks like a restart (refused or dropped connections, 503, 502/504) for that long."""
        attempt = 0
        failing_since: Optional[float] = None
        while True:
            try:
                response: httpx.Response = yield (Open(spec, raw) if stream else Send(spec))
            except httpx.TransportError as error:
                fatal = self._fatal(spec, error)
                if fatal is not None:
                    raise fatal from error
                if failing_since is None:
                    failing_since = self._clock()
                delay = self._policy.transport_delay(attempt, error, spec.idempotent)
                if delay is None and (isinstance(error, NOT_SENT_ERRORS) or (spec.idempotent and isinstance(error, TRANSIENT_ERRORS))):
                    delay = self._ride_out_delay(spec, attempt, failing_since, None)
                if delay is None:
                    raise self._connection_failed(spec, error, self._clock() - failing_since) from error
                attempt += 1
                yield Sleep(delay)
                continue
            status = response.status_code
            if status < 400 or status in ok:
                return response
            body = b""
            if stream:
                try:
                    body = yield ReadAll(response)
                except httpx.TransportError:
                    body = b""
                yield Close(response)
            else:
                body = response.content
            failure = error_from_response(status, response.headers, body, response.reason_phrase)
            if not spec.retry_status:
                raise failure
            if failing_since is None:
                failing_since = self._clock()
            delay = self._policy.status_delay(attempt, status, failure.retry_after, spec.idempotent)
            # A restart is ridden out; a full disk (503 storage-unavailable) is not one, and is
            # said at once after the usual retries (found in review: a submit took 30 s to say so).
            restarting = status == 503 and failure.code != "storage-unavailable"
            if delay is None and (restarting or (spec.idempotent and status in (502, 504))):
                delay = self._ride_out_delay(spec, attempt, failing_since, failure.retry_after)
            if delay is None:
                raise failure
            attempt += 1
            yield Sleep(delay)

    def _json(self, spec: RequestSpec) -> Flow[Dict[str, Any]]:
        response = yield from self._send(spec)
        return self._object(spec, response)

    @staticmethod
    def _object(spec: RequestSpec, response: httpx.Response) -> Dict[str, Any]:
        data = json_body(response)
        if not isinstance(data, dict):
            raise SpoolError(response.status_code, title="Invalid response", detail=f"{spec.method} {spec.path} answered JSON that is not an object")
        return data

    # -- jobs --

    def _submit_spec(
        self,
        type: str,
        input: Any,
        priority: int,
        timeout_s: Optional[float],
        idempotency_key: Optional[str],
        webhook: Optional[str],
        webhook_events: Optional[Sequence[str]],
        retry: Optional[RetryArg],
        run_at: Optional[Union[datetime, str]],
        delay_s: Optional[float],
        start_within_s: Optional[float],
        extra: Mapping[str, Any],
    ) -> RequestSpec:
        """`POST /v1/jobs` with the submit's body (`extra`: dedup, dedup_key or array) and an Idempotency-Key."""
        if run_at is not None and delay_s is not None:
            raise ValueError("give run_at or delay_s, not both")
        body: Dict[str, Any] = {"type": type}
        if input is not None:
            body["input"] = input
        if priority:
            body["priority"] = priority
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        if webhook is not None:
            body["webhook"] = webhook
        if webhook_events is not None:
            body["webhook_events"] = list(webhook_events)
        if retry is not None:
            body["retry"] = retry_json(retry)
        if run_at is not None:
            body["run_at"] = format_datetime(run_at)
        if delay_s is not None:
            body["delay_s"] = delay_s
        if start_within_s is not None:
            body["start_within_s"] = start_within_s
        body.update(extra)
        if idempotency_key is not None:
            check_header_value("idempotency_key", idempotency_key)
        key = idempotency_key or str(uuid.uuid4())
        try:
            text = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except ValueError:
            found = non_finite(body)
            if found is None:
                raise
            where, value = found
            raise ValueError(
                f"{where} is {value}: JSON has no NaN or infinity, so the server could not read the submit "
                f"(send None, a string, or leave the field out)"
            ) from None
        return RequestSpec(
            "POST",
            "/v1/jobs",
            headers={"Content-Type": "application/json", "Idempotency-Key": key},
            body=text.encode("utf-8"),
            idempotent=True,  # the Idempotency-Key makes a resend answer with the same job
            ride_out=self.restart_timeout,  # ... so it may ride out a restart, with the same key
        )

    def _submit(
        self,
        type: str,
        input: Any,
        priority: int,
        timeout_s: Optional[float],
        idempotency_key: Optional[str],
        webhook: Optional[str],
        webhook_events: Optional[Sequence[str]],
        retry: Optional[RetryArg] = None,
        run_at: Optional[Union[datetime, str]] = None,
        delay_s: Optional[float] = None,
        start_within_s: Optional[float] = None,
        dedup: Optional[DedupArg] = None,
        dedup_key: Optional[str] = None,
    ) -> Flow[Job]:
        extra: Dict[str, Any] = {}
        if dedup is not None:
            extra["dedup"] = dedup_json(dedup)
        if dedup_key is not None:
            if not isinstance(dedup_key, str):
                raise TypeError("dedup_key is a string")
            extra["dedup_key"] = dedup_key
        spec = self._submit_spec(
            type, input, priority, timeout_s, idempotency_key, webhook, webhook_events, retry, run_at, delay_s, start_within_s, extra
        )
        response = yield from self._send(spec)
        data = self._object(spec, response)
        return Job.from_json(data, dedup=response.headers.get("spool-dedup"))

    def _submit_array(
        self,
        type: str,
        input: Any,
        items: Optional[Sequence[Any]],
        range: Optional[Sequence[int]],
        fail_fast: bool,
        priority: int,
        timeout_s: Optional[float],
        idempotency_key: Optional[str],
        webhook: Optional[str],
        webhook_events: Optional[Sequence[str]],
        retry: Optional[RetryArg],
        run_at: Optional[Union[datetime, str]],
        delay_s: Optional[float],
        start_within_s: Optional[float],
    ) -> Flow[JobArray]:
        if input is not None and not isinstance(input, Mapping):
            raise TypeError("an array's input is a mapping (each task gets it with `item` added) or None")
        extra = {"array": array_spec(items, range, fail_fast)}
        spec = self._submit_spec(
            type, input, priority, timeout_s, idempotency_key, webhook, webhook_events, retry, run_at, delay_s, start_within_s, extra
        )
        data = yield from self._json(spec)
        return JobArray.from_json(data)

    def _get(self, job_id: str, wait: Optional[float] = None, ride_out: Optional[float] = 0.0) -> Flow[Job]:
        spec = RequestSpec("GET", job_path(job_id), ride_out=ride_out)
        if wait is not None and wait > 0:
            spec.params = {"wait": format_seconds(wait)}
            spec.read_timeout = wait + (self.timeout if self.timeout is not None else 30.0)
        return Job.from_json((yield from self._json(spec)))

    def _pages(self, path: str, key: str, params: Dict[str, str], page_size: int, parse: Callable[[Dict[str, Any]], Any]) -> Flow[None]:
        """Every item of a paged listing (`key` in each page), one page per request, following
        `next_cursor` until it runs out."""
        if not 1 <= page_size <= 500:
            raise ValueError("page_size must be from 1 to 500")
        cursor: Optional[str] = None
        while True:
            query = dict(params, limit=str(page_size))
            if cursor is not None:
                query["cursor"] = cursor
            page = yield from self._json(RequestSpec("GET", path, params=query))
            for item in page.get(key) or []:
                if isinstance(item, dict):
                    yield Emit(parse(item))
            next_cursor = page.get("next_cursor")
            if next_cursor is None or str(next_cursor) == cursor:
                return
            cursor = str(next_cursor)

    def _list(self, state: Optional[str], type: Optional[str], array: Optional[str], owner: Optional[str], page_size: int) -> Flow[None]:
        params = {name: value for name, value in (("status", state), ("type", type), ("array", array), ("owner", owner)) if value is not None}
        return (yield from self._pages("/v1/jobs", "jobs", params, page_size, Job.from_json))

    def _ride_out_until(self, deadline: Optional[float], reconnect_timeout: Optional[float]) -> Optional[float]:
        """How long the next request of a wait may ride out a restart: `reconnect_timeout`,
        and never past the wait's own deadline."""
        if deadline is None:
            return reconnect_timeout
        left = max(0.0, deadline - self._clock())
        return left if reconnect_timeout is None else min(left, reconnect_timeout)

    def _wait(self, job_id: str, timeout: Optional[float], reconnect_timeout: Optional[float] = FOLLOW_RECONNECT_S) -> Flow[Job]:
        deadline = None if timeout is None else self._clock() + max(0.0, timeout)
        previous: Optional[str] = None
        while True:
            remaining = MAX_WAIT_S if deadline is None else deadline - self._clock()
            hold = max(0.0, min(MAX_WAIT_S, remaining))
            started = self._clock()
            job = yield from self._get(job_id, wait=hold, ride_out=self._ride_out_until(deadline, reconnect_timeout))
            if job.done:
                return job
            if deadline is not None and self._clock() >= deadline:
                raise WaitTimeout(f"job {job_id} is still {job.state} after {format_seconds(timeout or 0.0)} s", job)
            elapsed = self._clock() - started
            if job.state == previous and elapsed < min(hold, 1.0):
                # The server answered at once without a change (it ignored ?wait): do not spin.
                pause = min(1.0 - elapsed, hold - elapsed)
                if pause > 0:
                    yield Sleep(pause)
            previous = job.state

    def _attempts(self, job_id: str) -> Flow[AttemptList]:
        return AttemptList.from_json((yield from self._json(RequestSpec("GET", job_path(job_id, "attempts")))))

    def _cancel(self, job_id: str) -> Flow[Job]:
        spec = RequestSpec("POST", job_path(job_id, "cancel"), idempotent=False)
        return Job.from_json((yield from self._json(spec)))

    def _delete(self, job_id: str) -> Flow[None]:
        # Not resent once it may have arrived: a repeat of a delete that went through is a 404.
        yield from self._send(RequestSpec("DELETE", job_path(job_id), idempotent=False))
        return None

    def _logs(self, job_id: str) -> Flow[str]:
        response = yield from self._send(RequestSpec("GET", job_path(job_id, "logs")))
        return response.content.decode("utf-8", "replace")

    def _follow_logs(self, job_id: str, poll_interval: float, reconnect_timeout: Optional[float] = FOLLOW_RECONNECT_S) -> Flow[None]:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        offset = 0
        finished = False
        while True:
            spec = RequestSpec("GET", job_path(job_id, "logs"), params={"offset": str(offset)}, ride_out=reconnect_timeout)
            response = yield from self._send(spec)
            data = response.content
            # The server's word on where to go on: after a log cut at its head (Spool-Log-Trimmed)
            # the answer holds what is left from its start, so its length says nothing.
            try:
                offset = int(response.headers.get("spool-next-offset", ""))
            except ValueError:
                offset += len(data)
            text = decoder.decode(data)
            if text:
                yield Emit(text)
            if finished and not data:
                break
            if not finished:
                # Sleeps up to poll_interval, and wakes at once when the job finishes.
                job = yield from self._get(job_id, wait=poll_interval, ride_out=reconnect_timeout)
                finished = job.done
        tail = decoder.decode(b"", final=True)
        if tail:
            yield Emit(tail)

    def _outputs(self, job_id: str) -> Flow[OutputList]:
        data = yield from self._json(RequestSpec("GET", job_path(job_id, "outputs")))
        outputs = OutputList(Output.from_json(o) for o in data.get("outputs") or [] if isinstance(o, dict))
        outputs.truncated = data.get("truncated") is True
        return outputs

    def _download(self, job_id: str, name: str, path: Optional[PathType]) -> Flow[Path]:
        if not name:
            raise ValueError("an output name is a non-empty string")
        target = download_target(name, path)
        part = Path(str(target) + ".part")
        # What the part holds: the URL it came from and its validator, written with it. A part of
        # another file (another job's output of the same name, say) is not resumed: its bytes
        # would be joined to this one's. A part without it (made by hand) is resumed as before.
        source = Path(str(target) + ".part.source")
        target.parent.mkdir(parents=True, exist_ok=True)
        url = job_path(job_id, "outputs", quote(name, safe="/"))
        validator: Optional[str] = None  # ETag (strong) or Last-Modified of the file being fetched
        if part.exists() and source.exists():
            try:
                came_from, _, saved = source.read_text(encoding="utf-8").partition("\n")
            except (OSError, UnicodeDecodeError):
                came_from, saved = "", ""
            if came_from != url:
                part.unlink(missing_ok=True)
            validator = saved or None if came_from == url else None
        ranges = False  # the server said Accept-Ranges: bytes, or answered a Range with 206
        failures = 0
        total: Optional[int] = None  # the file's size, when the server said
        while True:
            offset = part.stat().st_size if part.exists() else 0
            headers = {"Accept-Encoding": "identity", "Accept": "*/*"}
            if offset > 0:
                headers["Range"] = f"bytes={offset}-"
                if validator:
                    headers["If-Range"] = validator
            spec = RequestSpec("GET", url, headers=headers)
            response = yield from self._send(spec, stream=True, raw=True, ok=(416,))
            status = response.status_code
            if status == 416:
                # Nothing from `offset` on: complete if the part is the whole file, else start over.
                yield Close(response)
                size = (parse_content_range(response.headers.get("content-range")) or (None, None, None))[2]
                if size is not None and size == offset:
                    os.replace(part, target)
                    source.unlink(missing_ok=True)
                    return target
                part.unlink(missing_ok=True)
                failures += 1
                if failures > self._policy.retries:
                    raise SpoolError(416, title="Range Not Satisfiable", detail=f"could not resume {url}")
                continue
            if status == 206:
                content_range = parse_content_range(response.headers.get("content-range"))
                if content_range is None or content_range[0] != offset:
                    # Not the range asked for: start over without one.
                    yield Close(response)
                    part.unlink(missing_ok=True)
                    validator, ranges = None, False
                    failures += 1
                    if failures > self._policy.retries:
                        raise SpoolError(206, title="Bad range", detail=f"{url} answered a range that was not asked for")
                    continue
                mode, total, ranges = "ab", content_range[2], True
            else:  # 200: the whole file, also the answer to a Range the server ignored
                mode, offset = "wb", 0
                length = response.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
            etag = response.headers.get("etag")
            new_validator = etag if etag and not etag.startswith("W/") else response.headers.get("last-modified")
            if status == 200:
                validator = new_validator
                source.write_text(url + "\n" + (validator or ""), encoding="utf-8")
            if response.headers.get("accept-ranges", "").strip().lower() == "bytes":
                ranges = True
            written = offset
            try:
                with open(part, mode) as out:
                    while True:
                        chunk = yield Read(response)
                        if not chunk:
                            break
                        out.write(chunk)
                        written += len(chunk)
            except httpx.TransportError as error:
                yield Close(response)
                # Bytes kept are progress; without ranges nothing is kept, so every drop counts.
                failures = 0 if ranges and written > offset else failures + 1
                if failures > self._policy.retries:
                    raise self._connection_failed(spec, error) from error
                if not ranges:
                    part.unlink(missing_ok=True)  # the server cannot resume: the next try fetches it whole
                yield Sleep(self._policy.backoff(failures))
                continue
            yield Close(response)
            if total is not None and written != total:
                failures += 1
                if failures > self._policy.retries:
                    raise ConnectionFailed(f"download of {self.url}{url} ended at {written} of {total} bytes")
                if written > total:
                    part.unlink(missing_ok=True)
                continue
            os.replace(part, target)
            source.unlink(missing_ok=True)
            return target

    # -- job arrays --

    def _array(self, array_id: str, ride_out: Optional[float] = 0.0) -> Flow[JobArray]:
        return JobArray.from_json((yield from self._json(RequestSpec("GET", array_path(array_id), ride_out=ride_out))))

    def _array_tasks(self, array_id: str, page_size: int) -> Flow[None]:
        return (yield from self._pages(array_path(array_id, "tasks"), "tasks", {}, page_size, Job.from_json))

    def _arrays(self, type: Optional[str], owner: Optional[str], page_size: int) -> Flow[None]:
        params = {name: value for name, value in (("type", type), ("owner", owner)) if value is not None}
        return (yield from self._pages("/v1/arrays", "arrays", params, page_size, JobArray.from_json))

    def _array_outputs(self, array_id: str) -> Flow[List[ArrayOutput]]:
        data = yield from self._json(RequestSpec("GET", array_path(array_id, "outputs")))
        return [ArrayOutput.from_json(o) for o in data.get("outputs") or [] if isinstance(o, dict)]

    def _cancel_array(self, array_id: str) -> Flow[JobArray]:
        spec = RequestSpec("POST", array_path(array_id, "cancel"), idempotent=False)
        return JobArray.from_json((yield from self._json(spec)))

    def _retry_array(self, array_id: str, idempotency_key: Optional[str]) -> Flow[JobArray]:
        # Always with a key, as a submit: a resend after a dropped answer gets the same new array.
        if idempotency_key is not None:
            check_header_value("idempotency_key", idempotency_key)
        spec = RequestSpec("POST", array_path(array_id, "retry"), headers={"Idempotency-Key": idempotency_key or str(uuid.uuid4())},
                           idempotent=True, ride_out=self.restart_timeout)
        return JobArray.from_json((yield from self._json(spec)))

    def _delete_array(self, array_id: str) -> Flow[None]:
        # Not resent once it may have arrived, as `_delete`.
        yield from self._send(RequestSpec("DELETE", array_path(array_id), idempotent=False))
        return None

    def _poll_array(self, array_id: str, timeout: Optional[float], interval: float, emit: bool,
                    reconnect_timeout: Optional[float] = FOLLOW_RECONNECT_S) -> Flow[JobArray]:
        """Polls the array (there is no long-poll for arrays) until it is done: every 0.1 s at
        first, backing off to `interval`. With `emit`, hands out the first answer and each one
        that differs from the last. `WaitTimeout` (with the last array) after `timeout` s."""
        if interval <= 0:
            raise ValueError("interval must be positive")
        deadline = None if timeout is None else self._clock() + max(0.0, timeout)
        pause = min(0.1, interval)
        previous: Optional[JobArray] = None
        while True:
            array = yield from self._array(array_id, ride_out=self._ride_out_until(deadline, reconnect_timeout))
            if emit and array != previous:
                yield Emit(array)
            previous = array
            if array.done:
                return array
            if deadline is not None:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    raise WaitTimeout(
                        f"array {array_id} is still {array.state} ({array.counts.finished} of {array.size} tasks finished) "
                        f"after {format_seconds(timeout or 0.0)} s",
                        array,
                    )
                yield Sleep(min(pause, remaining))
            else:
                yield Sleep(pause)
            pause = min(interval, pause * 1.5)

    def _wait_array(self, array_id: str, timeout: Optional[float], interval: float,
                    reconnect_timeout: Optional[float] = FOLLOW_RECONNECT_S) -> Flow[JobArray]:
        return (yield from self._poll_array(array_id, timeout, interval, False, reconnect_timeout))

    def _watch_array(self, array_id: str, timeout: Optional[float], interval: float,
                     reconnect_timeout: Optional[float] = FOLLOW_RECONNECT_S) -> Flow[None]:
        yield from self._poll_array(array_id, timeout, interval, True, reconnect_timeout)

    # -- events --

    def _events(self, job_id: Optional[str], last_event_id: Optional[str], reconnect_timeout: Optional[float]) -> Flow[None]:
        path = job_path(job_id, "events") if job_id is not None else "/v1/events"
        if last_event_id:
            check_header_value("last_event_id", last_event_id)
        retry_s = 2.0
        last_id = last_event_id
        terminal = False
        failing_since: Optional[float] = None
        read_timeout = max(self.timeout or 0.0, STREAM_READ_TIMEOUT_S)
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
            if last_id:
                headers["Last-Event-ID"] = last_id
            spec = RequestSpec("GET", path, headers=headers, read_timeout=read_timeout)
            if failing_since is None:
                failing_since = self._clock()
            out_of_time = reconnect_timeout is not None and self._clock() - failing_since > reconnect_timeout
            try:
                response: httpx.Response = yield Open(spec)
            except httpx.TransportError as error:
                fatal = self._fatal(spec, error)
                if fatal is not None:
                    raise fatal from error
                if out_of_time or not isinstance(error, TRANSIENT_ERRORS + NOT_SENT_ERRORS):
                    raise self._connection_failed(spec, error, self._clock() - failing_since) from error
                yield Sleep(retry_s)
                continue
            if response.status_code == 204:
                # "Stop reconnecting": a job's stream resumed at or after its end has nothing more.
                yield Close(response)
                return
            if response.status_code != 200:
                try:
                    body = yield ReadAll(response)
                except httpx.TransportError:
                    body = b""
                yield Close(response)
                failure = error_from_response(response.status_code, response.headers, body, response.reason_phrase)
                if out_of_time or response.status_code not in (429, 502, 503, 504):
                    raise failure
                wait = retry_s if failure.retry_after is None else failure.retry_after
                yield Sleep(min(wait, self._policy.max_retry_after))
                continue
            if "text/event-stream" not in response.headers.get("content-type", ""):
                yield Close(response)
                raise SpoolError(200, title="Not an event stream", detail=f"{self.url}{path} answered {response.headers.get('content-type')}")
            failing_since = None
            parser = SSEParser(last_id)
            try:
                while True:
                    chunk = yield Read(response)
                    if not chunk:
                        parser.close()
                        break
                    for event in parser.feed(chunk):
                        last_id = parser.last_event_id
                        yield Emit(event)
                        if job_id is not None and event.event == "state" and event.state in TERMINAL_STATES:
                            terminal = True
                        elif job_id is not None and event.event == "outputs":
                            # A job's stream ends with its outputs, which only its end has
                            # (the final state came before, on this connection or an earlier one).
                            yield Close(response)
                            return
                    if parser.retry_ms is not None:
                        retry_s = parser.retry_ms / 1000.0
            except httpx.TransportError:
                pass  # a dropped connection: reconnect below
            yield Close(response)
            last_id = parser.last_event_id
            if terminal:
                return  # the server ended the job's stream after its final state
            yield Sleep(retry_s)

    # -- server --

    def _types(self) -> Flow[List[JobType]]:
        data = yield from self._json(RequestSpec("GET", "/v1/types"))
        return [JobType.from_json(t) for t in data.get("types") or [] if isinstance(t, dict)]

    def _queue(self) -> Flow[QueueInfo]:
        return QueueInfo.from_json((yield from self._json(RequestSpec("GET", "/v1/queue"))))

    def _webhook_secret(self, owner: Optional[str]) -> Flow[str]:
        spec = RequestSpec("GET", "/v1/webhook-secret", params={"owner": owner} if owner is not None else None)
        return str((yield from self._json(spec))["secret"])

    def _release_slot(self, slot: int) -> Flow[bool]:
        spec = RequestSpec("POST", f"/v1/slots/{int(slot)}/release", idempotent=True)
        return (yield from self._json(spec)).get("released") is True

    def _health(self) -> Flow[Health]:
        spec = RequestSpec("GET", "/healthz", retry_status=False)
        response = yield from self._send(spec, ok=(503,))
        if response.status_code == 503:
            try:
                data = json.loads(response.content)
            except ValueError:
                data = None
            if not isinstance(data, dict) or "status" not in data:
                raise error_from_response(503, response.headers, response.content, response.reason_phrase)
            return Health.from_json(data, 503)
        return Health.from_json(json_body(response), response.status_code)

