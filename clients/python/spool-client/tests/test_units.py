"""The pieces without I/O: the SSE parser, timestamps, models, error mapping."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import List, Tuple

import pytest

import spool_client
from spool_client import Job, SSEParser
from spool_client._errors import error_from_response, parse_retry_after
from spool_client._models import parse_datetime


def parse(*chunks: bytes) -> Tuple[List[Tuple[object, str, str]], SSEParser]:
    parser = SSEParser()
    events = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.close()
    return [(e.id, e.event, e.text) for e in events], parser


STREAM = (
    b"\xef\xbb\xbfretry: 2000\n\n"
    b": keep-alive comment\n"
    b"id: 41\nevent: state\ndata: {\"state\":\"running\"}\n\n"
    b"data: line one\r\ndata:line two\r\ndata\r\n\r\n"  # CRLF; no space after the colon; a bare field name
    b"id: 43\revent: log\rdata:  two spaces\r\r"  # CR only; only the first space is dropped
    b"event: nothing\n\n"  # no data: not dispatched
    b"id: 4\x005\ndata: \xc3\xa9t\xc3\xa9\n\n"  # an id holding NUL is ignored; UTF-8
    b"retry: soon\nid\ndata: x\n\n"  # a retry that is not digits is ignored; an empty id resets it
    b"id: 50\ndata: cut off"  # no blank line before the end: dropped
)
EXPECTED = [
    ("41", "state", '{"state":"running"}'),
    ("41", "message", "line one\nline two\n"),
    ("43", "log", " two spaces"),
    ("43", "message", "été"),
    (None, "message", "x"),
]


def test_sse_parser() -> None:
    events, parser = parse(STREAM)
    assert events == EXPECTED
    assert parser.retry_ms == 2000
    assert parser.last_event_id == ""  # from the empty id; the cut-off event's id never completed


def test_sse_parser_any_chunking() -> None:
    for cut in range(1, len(STREAM)):
        assert parse(STREAM[:cut], STREAM[cut:])[0] == EXPECTED, cut
    assert parse(*[STREAM[i:i + 1] for i in range(len(STREAM))])[0] == EXPECTED


def test_sse_event_data() -> None:
    events = SSEParser().feed(b'id: 7\nevent: state\ndata: {"job":"job_x","state":"failed"}\n\ndata: not json\n\n')
    assert events[0].data == {"job": "job_x", "state": "failed"} and events[0].job_id == "job_x" and events[0].state == "failed"
    assert events[1].data == "not json" and events[1].job_id is None and events[1].state is None


def test_parse_datetime() -> None:
    assert parse_datetime("2026-11-25T14:23:25.752665Z") == datetime(2026, 11, 25, 14, 23, 25, 752665, tzinfo=timezone.utc)
    assert parse_datetime("2026-11-25T14:23:25Z") == datetime(2026, 11, 25, 14, 23, 25, tzinfo=timezone.utc)
    assert parse_datetime("2026-11-25T14:23:25.5+02:00") == datetime(2026, 11, 25, 12, 23, 25, 500000, tzinfo=timezone.utc)
    assert parse_datetime("2026-11-25t14:23:25.123456789-0130").utcoffset() == -timedelta(hours=1, minutes=30)  # type: ignore[union-attr]
    assert parse_datetime(None) is None and parse_datetime("yesterday") is None and parse_datetime(5) is None


def test_job_keeps_unknown_fields() -> None:
    job = Job.from_json({
        "id": "job_x", "type": "render", "state": "queued", "priority": 2, "position": 3, "future_field": {"a": 1},
        "progress": {"fraction": 0.25, "message": "row 1"}, "eta": {"start_in_s": 1.5, "start_at": None, "method": "m"},
        "created_at": "2026-11-25T14:23:25.752665Z", "exit_code": None, "webhook_events": ["completed"],
    })
    assert (job.position, job.priority, job.done) == (3, 2, False)
    assert job.progress == spool_client.Progress(0.25, "row 1")
    assert job.eta is not None and job.eta.start_in_s == 1.5 and job.eta.start_at is None
    assert job.raw["future_field"] == {"a": 1}
    assert job.webhook_events == ["completed"] and job.max_attempts is None and job.started_at is None
    assert Job.from_json({"id": "job_y", "type": "t", "state": "succeeded"}).done


def test_error_mapping() -> None:
    def error(status: int, code: str, **headers: str) -> spool_client.SpoolError:
        body = f'{{"type":"urn:spool:problem:{code}","title":"T","status":{status},"detail":"d","errors":["e1","e2"]}}'
        return error_from_response(status, headers, body.encode())

    cases = {
        (400, "bad-request"): spool_client.BadRequest, (401, "unauthorized"): spool_client.Unauthorized,
        (403, "forbidden"): spool_client.Forbidden, (404, "not-found"): spool_client.NotFound,
        (409, "already-finished"): spool_client.AlreadyFinished, (409, "idempotency-conflict"): spool_client.IdempotencyConflict,
        (409, "other"): spool_client.Conflict, (413, "too-large"): spool_client.ContentTooLarge,
        (422, "invalid-input"): spool_client.InvalidInput, (429, "rate-limited"): spool_client.RateLimited,
        (503, "shutting-down"): spool_client.Unavailable, (500, "internal"): spool_client.ServerError,
        (418, "teapot"): spool_client.SpoolError,
    }
    for (status, code), cls in cases.items():
        made = error(status, code)
        assert type(made) is cls and made.status == status and made.code == code and made.errors == ["e1", "e2"]
    assert str(error(422, "invalid-input")) == "422 T: d (e1; e2)"
    assert error(503, "x", **{"retry-after": "3"}).retry_after == 3.0
    assert isinstance(error(409, "already-finished"), spool_client.Conflict)


def test_retry_after_as_a_date() -> None:
    now = datetime(2026, 12, 4, 7, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("Fri, 04 Dec 2026 07:00:30 GMT", now) == 30.0
    assert parse_retry_after("Fri, 04 Dec 2026 06:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon", now) is None and parse_retry_after(None) is None


def test_bad_urls() -> None:
    with pytest.raises(ValueError):
        spool_client.Client("ftp://example.com")
    with pytest.raises(ValueError):
        spool_client.Client("not a url")


def test_problem_members_are_kept() -> None:
    body = (b'{"type":"urn:spool:problem:rate-limited","title":"Too Many Requests","status":429,'
            b'"detail":"this token may submit 1.0 jobs per second (token rate)","instance":"/v1/jobs",'
            b'"limit":"token rate","retry_after_s":1}')
    error = error_from_response(429, {"retry-after": "1"}, body)
    assert isinstance(error, spool_client.RateLimited)
    assert (error.limit, error.retry_after, error.problem["retry_after_s"]) == ("token rate", 1.0, 1)
    assert error_from_response(429, {}, b"").limit is None
