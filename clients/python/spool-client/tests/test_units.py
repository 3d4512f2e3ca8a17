"""The pieces without I/O: the SSE parser, timestamps, models, error mapping."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import List, Tuple

import pytest

import spool_client
from spool_client import ArrayRef, Job, SSEParser
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
    assert events[0].array is None and events[1].array is None
    task = SSEParser().feed(b'event: state\ndata: {"job":"job_y","state":"queued","array":{"id":"arr_z","index":4}}\n\n')[0]
    assert task.array == ArrayRef(id="arr_z", index=4)


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
    assert job.waiting_reason is None
    stuck = Job.from_json({"id": "job_z", "type": "sd", "state": "queued", "waiting_reason": "no slot can start it now: …"})
    assert stuck.waiting_reason == "no slot can start it now: …"


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


def test_job_schedule_and_retry_fields() -> None:
    job = Job.from_json({
        "id": "job_x", "type": "flaky", "state": "queued", "max_attempts": 3,
        "not_before": "2026-12-04T17:24:06.170144Z", "start_by": "2026-12-04T17:25:06Z",
        "retry": {"max_attempts": 3, "backoff_s": 0.2, "max_backoff_s": 0.5, "on": ["exit_code", 75, True, None]},
    })
    assert job.not_before == datetime(2026, 12, 4, 17, 24, 6, 170144, tzinfo=timezone.utc)
    assert job.start_by == datetime(2026, 12, 4, 17, 25, 6, tzinfo=timezone.utc)
    assert job.retry == spool_client.JobRetry(3, 0.2, 0.5, ["exit_code", 75])  # what is neither a reason nor a code is dropped
    assert job.retry is not None and job.retry.raw["on"][-1] is None
    plain = Job.from_json({"id": "job_y", "type": "noop", "state": "canceled", "reason": "deadline"})
    assert (plain.not_before, plain.start_by, plain.retry, plain.reason) == (None, None, None, "deadline")
    kind = spool_client.JobType.from_json({"name": "flaky", "mode": "process", "retry": {"max_attempts": 2}})
    assert kind.retry == spool_client.JobRetry(2)
    assert spool_client.JobType.from_json({"name": "noop", "mode": "process", "retry": None}).retry is None


def test_retry_json() -> None:
    from spool_client._models import retry_json

    policy = spool_client.JobRetry(max_attempts=4, backoff_s=2, on=["timeout", 75])
    assert retry_json(policy) == {"max_attempts": 4, "backoff_s": 2, "on": ["timeout", 75]}
    assert retry_json(spool_client.JobRetry(2)) == {"max_attempts": 2}
    assert retry_json(3) == {"max_attempts": 3}
    assert retry_json({"max_attempts": 2, "on": ("signal", 1)}) == {"max_attempts": 2, "on": ["signal", 1]}
    assert retry_json({"max_attempts": 2, "future": True}) == {"max_attempts": 2, "future": True}  # passed on as given
    assert spool_client.JobRetry.from_json(retry_json(policy)) == policy
    for bad in (True, "3", 2.5, None):
        with pytest.raises(TypeError):
            retry_json(bad)  # type: ignore[arg-type]


def test_format_datetime() -> None:
    from spool_client._models import format_datetime

    india = timezone(timedelta(hours=5, minutes=30))
    assert format_datetime(datetime(2026, 12, 24, 23, 30, tzinfo=india)) == "2026-12-24T18:00:00Z"
    assert format_datetime(datetime(2026, 12, 24, 18, 0, 0, 1500, tzinfo=timezone.utc)) == "2026-12-24T18:00:00.001500Z"
    assert format_datetime("2026-12-24T18:00:00Z") == "2026-12-24T18:00:00Z"  # a string is sent as it is
    with pytest.raises(ValueError):
        format_datetime(datetime(2026, 12, 24, 18, 0))  # naive
    with pytest.raises(TypeError):
        format_datetime(1766599200)  # type: ignore[arg-type]


def test_attempt_list() -> None:
    attempts = spool_client.AttemptList.from_json({
        "job": "job_x", "state": "running", "max_attempts": 3, "not_before": None,
        "retry": {"max_attempts": 3, "backoff_s": 1, "max_backoff_s": 300, "on": ["exit_code"]},
        "attempts": [
            {"attempt": 1, "state": "queued", "reason": "exit_code", "exit_code": 3, "error": "exited with status 3",
             "slot": 0, "started_at": "2026-12-04T17:23:56.273764Z", "ended_at": "2026-12-04T17:23:56.471284Z",
             "retry_at": "2026-12-04T17:23:56.535277Z"},
            {"attempt": 2, "state": "queued", "reason": "worker_lost", "node": "gpu-2", "signal": 9},
            {"attempt": 3, "state": "queued", "slot": 1, "counted": False, "error": "the server shut down while it ran; it runs again"},
            {"attempt": 3, "state": "running", "slot": 1, "started_at": "2026-12-04T17:24:00Z",
             "progress": {"fraction": 0.5, "message": "half"}, "future": 1},
            "not an attempt",
        ],
    })
    assert (attempts.job, attempts.state, attempts.max_attempts, attempts.not_before) == ("job_x", "running", 3, None)
    assert attempts.retry == spool_client.JobRetry(3, 1.0, 300.0, ["exit_code"])
    assert len(attempts) == 4 and [a.attempt for a in attempts] == [1, 2, 3, 3] and attempts[-1] is attempts.last
    first, lost, taken_back, running = attempts
    assert [a.counted for a in attempts] == [True, True, False, True]
    assert taken_back.error == "the server shut down while it ran; it runs again"
    assert (first.reason, first.exit_code, first.slot, first.signal) == ("exit_code", 3, 0, None)
    assert first.retry_at == datetime(2026, 12, 4, 17, 23, 56, 535277, tzinfo=timezone.utc)
    assert first.ended_at is not None and first.started_at is not None and first.started_at < first.ended_at
    assert (lost.reason, lost.node, lost.signal, lost.started_at, lost.retry_at) == ("worker_lost", "gpu-2", 9, None, None)
    assert running.progress == spool_client.Progress(0.5, "half") and running.ended_at is None and running.raw["future"] == 1
    assert attempts[1:] == [lost, taken_back, running]
    waiting = spool_client.AttemptList.from_json({"job": "job_y", "state": "queued", "attempts": [], "max_attempts": 1,
                                                  "retry": None, "not_before": "2026-12-04T18:00:00Z"})
    assert waiting.not_before == datetime(2026, 12, 4, 18, tzinfo=timezone.utc) and waiting.retry is None
    assert list(waiting) == [] and waiting.last is None


def test_deadline_unreachable() -> None:
    import pickle

    body = (b'{"type":"urn:spool:problem:deadline-unreachable","title":"Conflict","status":409,'
            b'"detail":"the job would not start within its start_within_s of 1 s: 2 job(s) wait ahead of it; nothing was stored",'
            b'"instance":"/v1/jobs","queued_ahead":2,"start_by":"2026-12-04T17:24:07.043429Z",'
            b'"estimate":{"start_in_s":3.3,"start_at":"2026-12-04T17:24:09.352009Z","method":"2 job(s) ahead"}}')
    error = error_from_response(409, {}, body)
    assert type(error) is spool_client.DeadlineUnreachable and isinstance(error, spool_client.Conflict)
    assert (error.status, error.code, error.queued_ahead) == (409, "deadline-unreachable", 2)
    assert error.start_by == datetime(2026, 12, 4, 17, 24, 7, 43429, tzinfo=timezone.utc)
    assert error.estimate == spool_client.Estimate(3.3, datetime(2026, 12, 4, 17, 24, 9, 352009, tzinfo=timezone.utc), "2 job(s) ahead")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is spool_client.DeadlineUnreachable and copy.estimate == error.estimate and str(copy) == str(error)
    bare = error_from_response(409, {}, b'{"type":"urn:spool:problem:deadline-unreachable","title":"Conflict","status":409}')
    assert isinstance(bare, spool_client.DeadlineUnreachable) and (bare.estimate, bare.start_by, bare.queued_ahead) == (None, None, None)


def test_job_array_models() -> None:
    array = spool_client.JobArray.from_json({
        "id": "arr_x", "type": "frame", "state": "running", "size": 240, "progress": 0.4375, "fail_fast": True,
        "counts": {"queued": 130, "running": 4, "succeeded": 100, "failed": 5, "canceled": 1},
        "created_at": "2026-12-04T17:41:02.312392Z", "owner": "alice", "future": 1,
        "eta": {"last_start_in_s": 9, "done_in_s": 12.5, "done_at": "2026-12-04T17:41:31Z", "method": "m"},
        "links": {"self": "/v1/arrays/arr_x"},
    })
    assert (array.size, array.progress, array.fail_fast, array.owner, array.done, array.succeeded) == (240, 0.4375, True, "alice", False, False)
    assert array.counts == spool_client.ArrayCounts(130, 4, 100, 5, 1)
    assert (array.counts.finished, array.counts.total) == (106, 240)
    assert array.eta == spool_client.ArrayEstimate(9.0, 12.5, datetime(2026, 12, 4, 17, 41, 31, tzinfo=timezone.utc), "m")
    assert array.raw["future"] == 1 and array.links["self"] == "/v1/arrays/arr_x"
    bare = spool_client.JobArray.from_json({"id": "arr_y", "state": "canceled", "eta": {"last_start_in_s": 1, "method": "m"}})
    assert bare.done and bare.counts.total == 0 and bare.eta is not None and bare.eta.done_in_s is None

    task = Job.from_json({"id": "job_x", "type": "frame", "state": "queued", "array": {"id": "arr_x", "index": 7}}, dedup="Joined")
    assert task.array == spool_client.ArrayRef("arr_x", 7) and task.dedup == "joined"
    alone = Job.from_json({"id": "job_y", "type": "frame", "state": "queued", "array": None})
    assert alone.array is None and alone.dedup is None

    types = [spool_client.JobType.from_json({"name": n, "mode": "process", "dedup": d}) for n, d in
             (("a", "queued"), ("b", {"succeeded_within_s": 60}), ("c", None))]
    assert [t.dedup for t in types] == ["queued", {"succeeded_within_s": 60}, None]


def test_sync_and_async_clients_are_twins() -> None:
    import inspect

    def public(cls: type) -> dict:
        return {n: inspect.signature(f) for n, f in vars(cls).items() if callable(f) and not n.startswith("_")}

    sync, asyncs = public(spool_client.Client), public(spool_client.AsyncClient)
    assert set(sync) - {"close"} == set(asyncs) - {"aclose"}
    for name in set(sync) - {"close"}:
        a, b = sync[name].parameters, asyncs[name].parameters
        assert [(p.name, p.kind, p.default) for p in a.values()] == [(p.name, p.kind, p.default) for p in b.values()], name


def test_verify_webhook_is_false_on_anything_malformed() -> None:
    # Found by attacking the build: a non-ASCII signature raised TypeError (hmac.compare_digest of str).
    import hashlib
    import hmac

    from spool_client import verify_webhook

    secret, body, now = "webhook-secret", b'{"job": "x"}', 1_800_000_000
    good = "v1=" + hmac.new(secret.encode(), f"{now}.".encode() + body, hashlib.sha256).hexdigest()
    assert verify_webhook(secret, {"Spool-Webhook-Timestamp": str(now), "Spool-Webhook-Signature": good}, body, now=now)
    for timestamp, signature in ((str(now), "v1=\u00e9"), (str(now), good[:-1] + "\u00e9"), ("\u0661" + str(now)[1:], good),
                                 (str(now), None), (None, good), ("", good), (str(now), "")):
        headers = {"Spool-Webhook-Timestamp": timestamp, "Spool-Webhook-Signature": signature}
        assert verify_webhook(secret, headers, body, now=now) is False, (timestamp, signature)  # type: ignore[arg-type]
    # A body that is not bytes is the caller's mistake, said as such (found in review: a str body
    # raised "can't concat str to bytes"); a bytearray is bytes.
    headers = {"Spool-Webhook-Timestamp": str(now), "Spool-Webhook-Signature": good}
    with pytest.raises(TypeError, match="raw request body as bytes"):
        verify_webhook(secret, headers, body.decode(), now=now)  # type: ignore[arg-type]
    assert verify_webhook(secret, headers, bytearray(body), now=now)


def test_readme_array_example_downloads_each_task_to_its_own_place() -> None:
    # Found by attacking the build: the example wrote every task's render.png to frames/render.png.
    import re
    from pathlib import Path

    from spool_client._core import download_target

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    calls = re.findall(r"^\s*spool\.download\(output\.task, output\.name, (.+?)\)\s*(?:#.*)?$", readme, re.MULTILINE)
    assert calls, "the README's job array example downloads with spool.download(output.task, output.name, PATH)"
    outputs = [spool_client.ArrayOutput(task=f"job_{i}", index=i, name="render.png", size=1, url="") for i in (1, 2, 3)]
    for path in calls:
        targets = {download_target(o.name, eval(path, {}, {"output": o})) for o in outputs}  # noqa: S307 (our README)
        assert len(targets) == len(outputs), f"{path} writes every task's render.png to one file"
