"""What the server answers, as typed dataclasses.

Every model keeps the JSON object it was built from in `raw`, so a field a newer server adds
is never lost (and never breaks parsing): read it from `raw` until the client knows it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union, overload

TERMINAL_STATES = frozenset({"succeeded", "failed", "canceled"})

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|z|[+-]\d{2}:?\d{2})?$"
)


def parse_datetime(value: Any) -> Optional[datetime]:
    """An RFC 3339 timestamp as an aware datetime (UTC when no offset is given); None if absent.

    Written by hand because `datetime.fromisoformat` before Python 3.11 takes neither `Z` nor
    more or fewer than 3 or 6 fractional digits.
    """
    if not isinstance(value, str):
        return None
    match = _RFC3339.match(value.strip())
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    tz = timezone.utc
    if offset and offset not in ("Z", "z"):
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    try:
        return datetime(int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59), micros, tzinfo=tz)
    except ValueError:
        return None


def _opt_int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _opt_float(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _opt_str(value: Any) -> Optional[str]:
    return value if isinstance(value, str) else None


def _obj(value: Any) -> Dict[str, Any]:
    return value if isinstance(value, dict) else {}


def format_datetime(value: Union[datetime, str]) -> str:
    """An RFC 3339 UTC timestamp (``…Z``) for the server: an aware datetime is converted to UTC
    (a naive one is refused: its zone is unknown); a string is passed on as it is."""
    if isinstance(value, str):
        return value
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime or a string, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a naive datetime has no time zone: give an aware one (e.g. tzinfo=timezone.utc)")
    utc = value.astimezone(timezone.utc)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


#: What a retry policy's `on` may hold: these failure reasons, and exit codes 1–255.
RETRY_REASONS = frozenset({"exit_code", "signal", "timeout", "error", "worker_lost", "spawn_failed"})


@dataclass(frozen=True)
class JobRetry:
    """A job's retry policy (`retry` of a submit, a job, a job type): up to `max_attempts`
    attempts in all, the wait before attempt n+1 drawn from [0, min(max_backoff_s,
    backoff_s × 2^(n−1))] (exponential back-off with full jitter).

    `on` lists the failures that retry: reasons (``exit_code``, ``signal``, ``timeout``,
    ``error``, ``worker_lost``, ``spawn_failed``) and/or exit codes 1–255 (then only those codes
    retry among non-zero exits). None leaves the server's defaults (backoff 1 s, at most 300 s;
    exit_code, signal, timeout, error, worker_lost). Not to be confused with `RetryPolicy`,
    which is how the *client* retries HTTP requests.
    """

    max_attempts: int
    backoff_s: Optional[float] = None
    max_backoff_s: Optional[float] = None
    on: Optional[List[Union[str, int]]] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_json(self) -> Dict[str, Any]:
        """The policy as a submit's `retry` member (unset fields left out)."""
        body: Dict[str, Any] = {"max_attempts": self.max_attempts}
        if self.backoff_s is not None:
            body["backoff_s"] = self.backoff_s
        if self.max_backoff_s is not None:
            body["max_backoff_s"] = self.max_backoff_s
        if self.on is not None:
            body["on"] = list(self.on)
        return body

    @classmethod
    def from_json(cls, data: Any) -> Optional["JobRetry"]:
        if not isinstance(data, dict):
            return None
        on = data.get("on")
        return cls(
            max_attempts=_opt_int(data.get("max_attempts")) or 1,
            backoff_s=_opt_float(data.get("backoff_s")),
            max_backoff_s=_opt_float(data.get("max_backoff_s")),
            on=[x for x in on if isinstance(x, str) or (isinstance(x, int) and not isinstance(x, bool))] if isinstance(on, list) else None,
            raw=dict(data),
        )


def retry_json(value: Union["JobRetry", Mapping[str, Any], int]) -> Dict[str, Any]:
    """A submit's `retry` member from a `JobRetry`, a mapping of the same fields, or a bare
    number of attempts. Checked here only for its shape; the server checks the values."""
    if isinstance(value, JobRetry):
        return value.to_json()
    if isinstance(value, bool):
        raise TypeError("retry is a JobRetry, a mapping or a number of attempts, not a bool")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"retry={value}: a bare number is the attempts in all, 1 or more (1: no retry)")
        return {"max_attempts": value}
    if isinstance(value, Mapping):
        body = dict(value)
        on = body.get("on")
        if isinstance(on, (tuple, set, frozenset)):
            body["on"] = sorted(on, key=str) if isinstance(on, (set, frozenset)) else list(on)
        return body
    raise TypeError(f"retry is a JobRetry, a mapping or a number of attempts, not {type(value).__name__}")


@dataclass(frozen=True)
class ArrayRef:
    """Where a task of a job array belongs (`Job.array`): the array's id and the task's index
    (its item's position from 0, or the number itself for a `range`)."""

    id: str
    index: int

    @classmethod
    def from_json(cls, data: Any) -> Optional["ArrayRef"]:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            return None
        return cls(id=data["id"], index=_opt_int(data.get("index")) or 0)


def dedup_json(value: Union[str, Mapping[str, Any]]) -> Union[str, Dict[str, Any]]:
    """A submit's `dedup` member: ``"queued"`` or a mapping such as ``{"succeeded_within_s": 3600}``.
    Checked here only for its shape; the server checks the values (a bad one is a 422)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f'dedup is "queued" or a mapping like {{"succeeded_within_s": 3600}}, not {type(value).__name__}')


@dataclass(frozen=True)
class Progress:
    fraction: float
    message: Optional[str] = None

    @classmethod
    def from_json(cls, data: Any) -> Optional["Progress"]:
        if not isinstance(data, dict):
            return None
        return cls(fraction=_opt_float(data.get("fraction")) or 0.0, message=_opt_str(data.get("message")))


@dataclass(frozen=True)
class Estimate:
    """When a queued job is likely to start."""

    start_in_s: Optional[float]
    start_at: Optional[datetime]
    method: Optional[str]

    @classmethod
    def from_json(cls, data: Any) -> Optional["Estimate"]:
        if not isinstance(data, dict):
            return None
        return cls(
            start_in_s=_opt_float(data.get("start_in_s")),
            start_at=parse_datetime(data.get("start_at")),
            method=_opt_str(data.get("method")),
        )


class _Ends:
    """`done` and `succeeded`, read off `state`: a job's, or a job array's (what its tasks add up to)."""

    state: str

    @property
    def done(self) -> bool:
        """True once it is succeeded, failed or canceled (it will not change again)."""
        return self.state in TERMINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "succeeded"


@dataclass(frozen=True)
class Job(_Ends):
    """A job as the server describes it (`GET /v1/jobs/{id}`)."""

    id: str
    type: str
    state: str
    priority: int = 0
    input: Any = None
    attempts: int = 0
    max_attempts: Optional[int] = None
    timeout_s: Optional[float] = None
    created_at: Optional[datetime] = None
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    progress: Optional[Progress] = None
    result: Any = None
    error: Optional[str] = None
    reason: Optional[str] = None
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    slot: Optional[int] = None
    node: Optional[str] = None
    #: The tenant (token name) that submitted it, and the one that canceled it, on a server with tokens.
    owner: Optional[str] = None
    canceled_by: Optional[str] = None
    position: Optional[int] = None
    eta: Optional[Estimate] = None
    webhook: Optional[str] = None
    webhook_events: Optional[List[str]] = None
    cancel_requested: bool = False
    #: A queued job that may not start before this time (`run_at`, `delay_s`, or a retry's back-off).
    not_before: Optional[datetime] = None
    #: A queued job with `start_within_s`: canceled with reason ``deadline`` if not started by then.
    start_by: Optional[datetime] = None
    #: The job's retry policy (its submit's or its type's); None when failures are final.
    retry: Optional[JobRetry] = None
    #: A task of a job array: the array's id and the task's index; None for a job of its own.
    array: Optional["ArrayRef"] = None
    #: Why a queued job cannot start now whatever its place (no slot can set up its worker type);
    #: None otherwise, and on list pages.
    waiting_reason: Optional[str] = None
    #: How a submit with result reuse was answered: ``joined`` (an identical job that is queued or
    #: running), ``reused`` (one that succeeded), or None (a new job; and on jobs not from `submit`).
    dedup: Optional[str] = field(default=None, compare=False)
    links: Dict[str, str] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any], dedup: Optional[str] = None) -> "Job":
        """`dedup` is the submit's `Spool-Dedup` header, when there was one."""
        events = data.get("webhook_events")
        links = _obj(data.get("links"))
        return cls(
            id=str(data.get("id", "")),
            type=str(data.get("type", "")),
            state=str(data.get("state", "")),
            priority=_opt_int(data.get("priority")) or 0,
            input=data.get("input"),
            attempts=_opt_int(data.get("attempts")) or 0,
            max_attempts=_opt_int(data.get("max_attempts")),
            timeout_s=_opt_float(data.get("timeout_s")),
            created_at=parse_datetime(data.get("created_at")),
            started_at=parse_datetime(data.get("started_at")),
            finished_at=parse_datetime(data.get("finished_at")),
            progress=Progress.from_json(data.get("progress")),
            result=data.get("result"),
            error=_opt_str(data.get("error")),
            reason=_opt_str(data.get("reason")),
            exit_code=_opt_int(data.get("exit_code")),
            signal=_opt_int(data.get("signal")),
            slot=_opt_int(data.get("slot")),
            node=_opt_str(data.get("node")),
            owner=_opt_str(data.get("owner")),
            canceled_by=_opt_str(data.get("canceled_by")),
            position=_opt_int(data.get("position")),
            eta=Estimate.from_json(data.get("eta")),
            webhook=_opt_str(data.get("webhook")),
            webhook_events=[str(e) for e in events] if isinstance(events, list) else None,
            cancel_requested=data.get("cancel_requested") is True,
            not_before=parse_datetime(data.get("not_before")),
            start_by=parse_datetime(data.get("start_by")),
            retry=JobRetry.from_json(data.get("retry")),
            array=ArrayRef.from_json(data.get("array")),
            waiting_reason=_opt_str(data.get("waiting_reason")),
            dedup=dedup.strip().lower() if isinstance(dedup, str) and dedup.strip() else None,
            links={str(k): str(v) for k, v in links.items()},
            raw=dict(data),
        )


@dataclass(frozen=True)
class Output:
    """One output file of a job."""

    name: str
    size: int
    content_type: Optional[str]
    url: str
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Output":
        return cls(
            name=str(data.get("name", "")),
            size=_opt_int(data.get("size")) or 0,
            content_type=_opt_str(data.get("content_type")),
            url=str(data.get("url", "")),
            raw=dict(data),
        )


class OutputList(List[Output]):
    """A job's output files: a list of `Output`, with `truncated` True when the server listed
    only some of them (it lists at most 10,000; fetch the others by name)."""

    truncated: bool = False


@dataclass(frozen=True)
class Attempt:
    """One attempt of a job (`GET /v1/jobs/{id}/attempts`).

    `state` is how the attempt left the job: ``queued`` when it went round again (a retry, a
    lost worker, a crash; `retry_at` says when a retry was due), ``running`` for the attempt in
    progress (with `progress`), else ``succeeded``, ``failed`` or ``canceled``.
    `counted` is False for a run the server took back through no fault of the job's (its slot
    was quarantined, the server shut down while it ran): it used no attempt, so the next one has
    its number again, and `error` says why.
    """

    attempt: int
    state: str
    reason: Optional[str] = None
    slot: Optional[int] = None
    node: Optional[str] = None
    started_at: Optional[datetime] = None
    ended_at: Optional[datetime] = None
    exit_code: Optional[int] = None
    signal: Optional[int] = None
    error: Optional[str] = None
    retry_at: Optional[datetime] = None
    progress: Optional[Progress] = None
    counted: bool = True
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Attempt":
        return cls(
            attempt=_opt_int(data.get("attempt")) or 0,
            state=str(data.get("state", "")),
            reason=_opt_str(data.get("reason")),
            slot=_opt_int(data.get("slot")),
            node=_opt_str(data.get("node")),
            started_at=parse_datetime(data.get("started_at")),
            ended_at=parse_datetime(data.get("ended_at")),
            exit_code=_opt_int(data.get("exit_code")),
            signal=_opt_int(data.get("signal")),
            error=_opt_str(data.get("error")),
            retry_at=parse_datetime(data.get("retry_at")),
            progress=Progress.from_json(data.get("progress")),
            counted=data.get("counted") is not False,
            raw=dict(data),
        )


@dataclass(frozen=True)
class AttemptList(Sequence[Attempt]):
    """A job's attempts, oldest first (every one that ended, then the running one), with the
    job's `state`, `max_attempts`, `retry` policy and, while it waits out a delay or a back-off,
    `not_before`. Iterable and indexable like the list `attempts`."""

    job: str
    state: str
    attempts: List[Attempt]
    max_attempts: Optional[int] = None
    retry: Optional[JobRetry] = None
    not_before: Optional[datetime] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.attempts)

    @overload
    def __getitem__(self, index: int) -> Attempt: ...

    @overload
    def __getitem__(self, index: slice) -> List[Attempt]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[Attempt, List[Attempt]]:
        return self.attempts[index]

    @property
    def last(self) -> Optional[Attempt]:
        """The latest attempt (the running one, while the job runs); None before the first."""
        return self.attempts[-1] if self.attempts else None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "AttemptList":
        items = data.get("attempts")
        return cls(
            job=str(data.get("job", "")),
            state=str(data.get("state", "")),
            attempts=[Attempt.from_json(a) for a in items if isinstance(a, dict)] if isinstance(items, list) else [],
            max_attempts=_opt_int(data.get("max_attempts")),
            retry=JobRetry.from_json(data.get("retry")),
            not_before=parse_datetime(data.get("not_before")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class JobType:
    """A job type the server accepts (`GET /v1/types`)."""

    name: str
    mode: str
    timeout_s: Optional[float]
    max_attempts: Optional[int]
    command_input_keys: List[str]
    #: The type's retry policy; None when failures are final.
    retry: Optional[JobRetry] = None
    #: The type's result-reuse rule (``"queued"`` or ``{"succeeded_within_s": S}``); None when off.
    dedup: Optional[Union[str, Dict[str, Any]]] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "JobType":
        keys = data.get("command_input_keys")
        dedup = data.get("dedup")
        return cls(
            name=str(data.get("name", "")),
            mode=str(data.get("mode", "")),
            timeout_s=_opt_float(data.get("timeout_s")),
            max_attempts=_opt_int(data.get("max_attempts")),
            command_input_keys=[str(k) for k in keys] if isinstance(keys, list) else [],
            retry=JobRetry.from_json(data.get("retry")),
            dedup=dedup if isinstance(dedup, str) else dict(dedup) if isinstance(dedup, dict) else None,
            raw=dict(data),
        )


@dataclass(frozen=True)
class ArrayCounts:
    """How many of a job array's tasks are in each state."""

    queued: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    canceled: int = 0

    @property
    def finished(self) -> int:
        """Tasks that will not change again (succeeded, failed or canceled)."""
        return self.succeeded + self.failed + self.canceled

    @property
    def total(self) -> int:
        return self.queued + self.running + self.finished

    @classmethod
    def from_json(cls, data: Any) -> "ArrayCounts":
        counts = _obj(data)
        return cls(*(_opt_int(counts.get(name)) or 0 for name in ("queued", "running", "succeeded", "failed", "canceled")))


@dataclass(frozen=True)
class ArrayEstimate:
    """When a job array's last queued task should start (`last_start_in_s`) and, once a run
    time has been learned, when the array should be done (`done_in_s`, `done_at`)."""

    last_start_in_s: Optional[float]
    done_in_s: Optional[float] = None
    done_at: Optional[datetime] = None
    method: Optional[str] = None

    @classmethod
    def from_json(cls, data: Any) -> Optional["ArrayEstimate"]:
        if not isinstance(data, dict):
            return None
        return cls(
            last_start_in_s=_opt_float(data.get("last_start_in_s")),
            done_in_s=_opt_float(data.get("done_in_s")),
            done_at=parse_datetime(data.get("done_at")),
            method=_opt_str(data.get("method")),
        )


@dataclass(frozen=True)
class JobArray(_Ends):
    """A job array (`GET /v1/arrays/{id}`): `size` tasks, each an ordinary job (`array_tasks`).

    `state` is ``running`` while any task runs, ``queued`` while any waits, then ``succeeded``
    (every task did), ``failed`` (any failed) or ``canceled``. `progress` (0–1) counts finished
    tasks 1 and running ones their reported fraction; `eta` is None when no task is queued or
    nothing has been learned yet.
    """

    id: str
    type: str
    state: str
    size: int
    counts: ArrayCounts
    progress: float = 0.0
    fail_fast: bool = False
    created_at: Optional[datetime] = None
    owner: Optional[str] = None
    eta: Optional[ArrayEstimate] = None
    links: Dict[str, str] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "JobArray":
        links = _obj(data.get("links"))
        progress = _opt_float(data.get("progress")) or 0.0
        return cls(
            id=str(data.get("id", "")),
            type=str(data.get("type", "")),
            state=str(data.get("state", "")),
            size=_opt_int(data.get("size")) or 0,
            counts=ArrayCounts.from_json(data.get("counts")),
            progress=max(0.0, min(1.0, progress)),
            fail_fast=data.get("fail_fast") is True,
            created_at=parse_datetime(data.get("created_at")),
            owner=_opt_str(data.get("owner")),
            eta=ArrayEstimate.from_json(data.get("eta")),
            links={str(k): str(v) for k, v in links.items()},
            raw=dict(data),
        )


@dataclass(frozen=True)
class ArrayOutput:
    """One output file of a job array's task (`GET /v1/arrays/{id}/outputs`): download it with
    ``download(output.task, output.name, ...)``."""

    task: str
    index: int
    name: str
    size: int
    url: str
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "ArrayOutput":
        return cls(
            task=str(data.get("task", "")),
            index=_opt_int(data.get("index")) or 0,
            name=str(data.get("name", "")),
            size=_opt_int(data.get("size")) or 0,
            url=str(data.get("url", "")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Slot:
    id: int
    gpu: Optional[str]
    state: str
    job: Optional[Job]
    worker: Optional[Dict[str, Any]]
    unhealthy: List[Dict[str, Any]]
    #: GPU quarantine: ``{"reasons": [...], "since": ...}`` while the slot takes no jobs (state ``quarantined``).
    quarantine: Optional[Dict[str, Any]] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Slot":
        job = data.get("job")
        worker = data.get("worker")
        unhealthy = data.get("unhealthy")
        quarantine = data.get("quarantine")
        return cls(
            id=_opt_int(data.get("id")) or 0,
            gpu=_opt_str(data.get("gpu")),
            state=str(data.get("state", "")),
            job=Job.from_json(job) if isinstance(job, dict) else None,
            worker=worker if isinstance(worker, dict) else None,
            unhealthy=[u for u in unhealthy if isinstance(u, dict)] if isinstance(unhealthy, list) else [],
            quarantine=quarantine if isinstance(quarantine, dict) else None,
            raw=dict(data),
        )


@dataclass(frozen=True)
class QueueInfo:
    """`GET /v1/queue`: jobs waiting, whether submits are accepted, and this node's slots."""

    queued: int
    accepting: bool
    slots: List[Slot]
    #: For a tenant's token: how many of the `queued` jobs are its own (None for an
    #: administrator, or a server without tokens).
    queued_mine: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "QueueInfo":
        slots = data.get("slots")
        return cls(
            queued=_opt_int(data.get("queued")) or 0,
            accepting=data.get("accepting") is True,
            slots=[Slot.from_json(s) for s in slots if isinstance(s, dict)] if isinstance(slots, list) else [],
            queued_mine=_opt_int(data.get("queued_mine")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Health:
    """`GET /healthz`: `status` is ``ok``, ``degraded`` or ``draining``; `http_status` 200 or 503."""

    status: str
    http_status: int
    store: Optional[str] = None
    slots: Optional[int] = None
    queued: Optional[int] = None
    problems: List[str] = field(default_factory=list)
    node: Optional[str] = None
    unhealthy_workers: List[Dict[str, Any]] = field(default_factory=list)
    #: GPU slots out of service: ``{"slot", "gpu", "reasons", "since"}`` each (status ``degraded``, still 200).
    quarantined_slots: List[Dict[str, Any]] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.http_status == 200

    @classmethod
    def from_json(cls, data: Mapping[str, Any], http_status: int) -> "Health":
        problems = data.get("problems")
        workers = data.get("unhealthy_workers")
        quarantined = data.get("quarantined_slots")
        return cls(
            status=str(data.get("status", "")),
            http_status=http_status,
            store=_opt_str(data.get("store")),
            slots=_opt_int(data.get("slots")),
            queued=_opt_int(data.get("queued")),
            problems=[str(p) for p in problems] if isinstance(problems, list) else [],
            node=_opt_str(data.get("node")),
            unhealthy_workers=[w for w in workers if isinstance(w, dict)] if isinstance(workers, list) else [],
            quarantined_slots=[q for q in quarantined if isinstance(q, dict)] if isinstance(quarantined, list) else [],
            raw=dict(data),
        )


@dataclass(frozen=True)
class Event:
    """One Server-Sent Event.

    `id` is the event's id (the `Last-Event-ID` to resume from; None if the event had none),
    `event` its kind (``state``, ``progress``, ``log``, ``outputs``; ``message`` when unnamed),
    `data` the data field parsed as JSON (the text itself when it is not JSON), `text` the raw
    data field.
    """

    id: Optional[str]
    event: str
    data: Any
    text: str = field(default="", repr=False)

    @classmethod
    def build(cls, id: Optional[str], event: str, text: str) -> "Event":
        try:
            data: Any = json.loads(text)
        except ValueError:
            data = text
        return cls(id=id, event=event, data=data, text=text)

    @property
    def job_id(self) -> Optional[str]:
        """The job the event is about (Spool puts it in `data.job`)."""
        return _opt_str(self.data.get("job")) if isinstance(self.data, dict) else None

    @property
    def state(self) -> Optional[str]:
        """For a ``state`` event, the job's new state."""
        return _opt_str(self.data.get("state")) if self.event == "state" and isinstance(self.data, dict) else None

    @property
    def array(self) -> Optional[ArrayRef]:
        """For a ``state`` event of a task of a job array, its array and index (so one stream can
        follow a whole array); None otherwise."""
        return ArrayRef.from_json(self.data.get("array")) if self.event == "state" and isinstance(self.data, dict) else None
