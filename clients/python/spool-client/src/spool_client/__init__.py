"""Spool client: submit jobs to a Spool server and follow them (sync `Client`, asyncio `AsyncClient`)."""

from ._async import AsyncClient
from ._core import RetryPolicy
from ._errors import (
    AlreadyFinished,
    BadRequest,
    Conflict,
    ConnectionFailed,
    ContentTooLarge,
    Forbidden,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    RateLimited,
    ServerError,
    SpoolError,
    Unauthorized,
    Unavailable,
    WaitTimeout,
)
from ._models import TERMINAL_STATES, Estimate, Event, Health, Job, JobType, Output, Progress, QueueInfo, Slot
from ._sse import SSEParser
from ._sync import Client
from ._version import __version__

__all__ = [
    "AlreadyFinished",
    "AsyncClient",
    "BadRequest",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "ContentTooLarge",
    "Estimate",
    "Event",
    "Forbidden",
    "Health",
    "IdempotencyConflict",
    "InvalidInput",
    "Job",
    "JobType",
    "NotFound",
    "Output",
    "Progress",
    "QueueInfo",
    "RateLimited",
    "RetryPolicy",
    "SSEParser",
    "ServerError",
    "Slot",
    "SpoolError",
    "TERMINAL_STATES",
    "Unauthorized",
    "Unavailable",
    "WaitTimeout",
    "__version__",
]
