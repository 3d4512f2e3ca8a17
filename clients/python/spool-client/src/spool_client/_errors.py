"""Typed exceptions, built from the server's RFC 9457 problem+json answers."""

from __future__ import annotations

import json
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Type

from ._models import Estimate, parse_datetime

PROBLEM_PREFIX = "urn:spool:problem:"


class SpoolError(Exception):
    """Base class of every error this library raises (except `WaitTimeout`, a `TimeoutError`).

    For an HTTP error answer the fields come from the problem+json body: `status`, `type`
    (``urn:spool:problem:<code>``), `title`, `detail`, `instance` and `errors` (one string per
    problem, empty when the server sent none); `problem` is the whole problem+json object as
    received (members a newer server adds, such as a 429's `limit`, are there).
    """

    def __init__(
        self,
        status: Optional[int],
        type: str = "about:blank",
        title: str = "",
        detail: str = "",
        errors: Optional[List[str]] = None,
        *,
        instance: Optional[str] = None,
        retry_after: Optional[float] = None,
        headers: Optional[Mapping[str, str]] = None,
        problem: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.errors: List[str] = list(errors or [])
        self.instance = instance
        self.retry_after = retry_after
        self.headers: Dict[str, str] = dict(headers or {})
        self.problem: Dict[str, Any] = dict(problem or {})
        super().__init__(self._message())

    @property
    def code(self) -> str:
        """The short problem code: ``not-found``, ``invalid-input``, ``idempotency-conflict``, …"""
        return self.type[len(PROBLEM_PREFIX):] if self.type.startswith(PROBLEM_PREFIX) else self.type

    def _message(self) -> str:
        head = f"{self.status} {self.title}".strip() if self.status else self.title
        text = f"{head}: {self.detail}" if self.detail else head
        if self.errors:
            text += " (" + "; ".join(self.errors) + ")"
        return text

    def __reduce__(self) -> Any:  # keep exceptions picklable with their keyword fields
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: Type[SpoolError], state: Dict[str, Any]) -> SpoolError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, error._message())
    return error


class BadRequest(SpoolError):
    """400: malformed JSON, query parameter or output name."""


class Unauthorized(SpoolError):
    """401: no or a wrong bearer token."""


class Forbidden(SpoolError):
    """403: the token may not do this."""


class NotFound(SpoolError):
    """404: no such job, output or route."""


class Conflict(SpoolError):
    """409: a conflict with the job's state or an earlier request."""


class AlreadyFinished(Conflict):
    """409 ``already-finished``: cancel of a job that has already finished."""


class NotEnded(Conflict):
    """409 ``not-ended``: delete of a job that is queued or running, or of a job array with
    such a task (cancel it first)."""


class ArrayTask(Conflict):
    """409 ``array-task``: delete of a task of a job array (it goes with its array)."""


class NothingToRetry(Conflict):
    """409 ``nothing-to-retry``: retry of a job array none of whose tasks failed or was canceled."""


class IdempotencyConflict(Conflict):
    """409 ``idempotency-conflict``: the Idempotency-Key was used for a different request."""


class DeadlineUnreachable(Conflict):
    """409 ``deadline-unreachable``: a submit with `start_within_s` the queue's estimate says
    cannot start in time; nothing was stored. `.estimate` is the queue's `Estimate` (start_in_s,
    start_at, method), `.start_by` the deadline (an aware datetime), `.queued_ahead` how many
    jobs wait ahead of it."""

    @property
    def estimate(self) -> Optional[Estimate]:
        return Estimate.from_json(self.problem.get("estimate"))

    @property
    def start_by(self) -> Optional[datetime]:
        return parse_datetime(self.problem.get("start_by"))

    @property
    def queued_ahead(self) -> Optional[int]:
        value = self.problem.get("queued_ahead")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class ContentTooLarge(SpoolError):
    """413: the request body is over the server's limit."""


class InvalidInput(SpoolError):
    """422: unknown type or fields, or an input failing the type's schema (see `.errors`)."""


class RateLimited(SpoolError):
    """429: too many requests; `.retry_after` says how many seconds to wait (None if not said),
    `.limit` which limit refused it (``token rate``, ``token max_queued``, ``max_queued``, …)."""

    @property
    def limit(self) -> Optional[str]:
        value = self.problem.get("limit")
        return value if isinstance(value, str) else None


class ServerError(SpoolError):
    """5xx other than 503: an unexpected failure on the server."""


class Unavailable(ServerError):
    """503: shutting down or storage unavailable; `.retry_after` seconds (None if not said)."""


class ConnectionFailed(SpoolError, ConnectionError):
    """The server could not be reached, or the connection broke (after any retries)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, "about:blank", message)


class PoolFull(ConnectionFailed):
    """No connection of the client's own pool came free in time (httpx's `PoolTimeout`): every
    connection its `limits` allow is in use — each long-poll (`wait`, `logs(follow=True)`) and
    each event stream holds one while it runs. Nothing was sent and nothing is wrong with the
    server; raise `limits.max_connections` (the default has no cap) or run fewer at once.
    Not retried. A `ConnectionFailed`, so code that catches that catches this too."""


class WaitTimeout(TimeoutError):
    """`wait()` ran out of time before the job finished; `.job` is the last state seen (the
    last `JobArray` for `wait_array()` and `watch_array()`)."""

    def __init__(self, message: str, job: Any = None) -> None:
        super().__init__(message)
        self.job = job


_BY_STATUS: Dict[int, Type[SpoolError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: ContentTooLarge,
    422: InvalidInput,
    429: RateLimited,
    503: Unavailable,
}

_BY_CODE: Dict[str, Type[SpoolError]] = {
    "already-finished": AlreadyFinished,
    "not-ended": NotEnded,
    "array-task": ArrayTask,
    "nothing-to-retry": NothingToRetry,
    "idempotency-conflict": IdempotencyConflict,
    "deadline-unreachable": DeadlineUnreachable,
}


def parse_retry_after(value: Optional[str], now: Optional[datetime] = None) -> Optional[float]:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def error_from_response(status: int, headers: Mapping[str, str], body: bytes, reason: str = "") -> SpoolError:
    """The typed exception for an error answer (problem+json, or any other body)."""
    problem: Dict[str, Any] = {}
    try:
        parsed = json.loads(body.decode("utf-8")) if body else None
        if isinstance(parsed, dict):
            problem = parsed
    except (UnicodeDecodeError, ValueError):
        pass
    def text(key: str, default: str) -> str:
        value = problem.get(key)
        return value if isinstance(value, str) else default

    ptype = text("type", "about:blank")
    title = text("title", reason or f"HTTP {status}")
    detail = text("detail", "")
    if not problem and body:
        # Not a problem document (a proxy's page, say): keep its start as the detail, on one line.
        detail = " ".join(body[:200].decode("utf-8", "replace").split())
    raw_errors = problem.get("errors")
    errors = [str(e) for e in raw_errors] if isinstance(raw_errors, list) else []
    instance = text("instance", "") or None
    code = ptype[len(PROBLEM_PREFIX):] if ptype.startswith(PROBLEM_PREFIX) else ""
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else SpoolError)
    return cls(
        status,
        ptype,
        title,
        detail,
        errors,
        instance=instance,
        retry_after=parse_retry_after(headers.get("retry-after")),
        headers=headers,
        problem=problem,
    )
