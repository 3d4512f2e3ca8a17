"""Client logic in isolation (retry timing, Range resume, dropped connections), with httpx.MockTransport.

Unit tests: every one runs with the sync and the async client, and the waits between retries are
recorded instead of slept, so the exact back-off is checked without slowing the suite. The same
behaviour against the real server: test_auth.py (429 retry, typed errors), test_download.py
(Range resume), test_events.py (SSE resume across a restart).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import httpx
import pytest

import spool_client

URL = "http://spool.test:8080"
JOB_ID = "job_" + "a" * 26


def job_json(state: str = "queued", **extra: Any) -> Dict[str, Any]:
    body = {
        "id": JOB_ID, "type": "noop", "state": state, "reason": None, "input": {}, "priority": 0, "timeout_s": 600,
        "attempts": 0, "max_attempts": 1, "position": None, "progress": None, "created_at": "2026-12-04T07:01:19.835581Z",
        "started_at": None, "finished_at": None, "exit_code": None, "signal": None, "error": None, "slot": None,
        "result": None, "links": {"self": f"/v1/jobs/{JOB_ID}"},
    }
    body.update(extra)
    return body


def problem(status: int, code: str, headers: Optional[Dict[str, str]] = None) -> httpx.Response:
    body = {"type": f"urn:spool:problem:{code}", "title": code, "status": status, "detail": f"a {code}", "instance": "/x"}
    return httpx.Response(status, json=body, headers={"Content-Type": "application/problem+json", **(headers or {})})


class Recorder:
    """A MockTransport handler answering from a script: each item is a response, an exception
    to raise, or a function of the request."""

    def __init__(self, *script: Any) -> None:
        self.script: List[Any] = list(script)
        self.requests: List[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if callable(item) and not isinstance(item, httpx.Response):
            item = item(request)
        if isinstance(item, BaseException):
            raise item
        return item


@pytest.fixture
def sleeps() -> List[float]:
    return []


@pytest.fixture
def mock_api(make_api: Callable[..., Any], sleeps: List[float]) -> Callable[..., Any]:
    def make(handler: Callable[[httpx.Request], httpx.Response], **options: Any) -> Any:
        options.setdefault("url", URL)
        return make_api(options.pop("url"), transport=httpx.MockTransport(handler), sleep=sleeps.append, **options)

    return make


# --- retries -------------------------------------------------------------------------------


def test_retry_honours_retry_after(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    server = Recorder(problem(429, "rate-limited", {"Retry-After": "2"}), problem(503, "shutting-down", {"Retry-After": "1"}),
                      httpx.Response(200, json=job_json()))
    job = mock_api(server).get(JOB_ID)
    assert job.id == JOB_ID and len(server.requests) == 3
    assert sleeps == [2.0, 1.0]


def test_retry_after_is_capped(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    server = Recorder(problem(429, "rate-limited", {"Retry-After": "1000"}), httpx.Response(200, json=job_json()))
    mock_api(server, max_retry_wait=5).get(JOB_ID)
    assert sleeps == [5.0]


def test_gives_up_after_retries(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    server = Recorder(problem(503, "storage-unavailable", {"Retry-After": "1"}))
    with pytest.raises(spool_client.Unavailable) as caught:
        mock_api(server, retries=2).get(JOB_ID)
    assert len(server.requests) == 3 and sleeps == [1.0, 1.0]
    assert caught.value.retry_after == 1.0 and caught.value.code == "storage-unavailable"

    limited = Recorder(problem(429, "rate-limited", {"Retry-After": "7"}))
    with pytest.raises(spool_client.RateLimited) as rate:
        mock_api(limited, retries=0).submit("noop")
    assert len(limited.requests) == 1 and rate.value.retry_after == 7.0 and rate.value.status == 429


def test_backoff_without_retry_after(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    server = Recorder(problem(503, "storage-unavailable"))
    with pytest.raises(spool_client.Unavailable):
        mock_api(server, retries=3).get(JOB_ID)
    assert len(sleeps) == 3
    for attempt, slept in enumerate(sleeps):
        step = 0.5 * 2 ** attempt
        assert step / 2 <= slept <= step


def test_submit_is_resent_with_the_same_key_and_body(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    server = Recorder(problem(503, "shutting-down", {"Retry-After": "1"}), httpx.ReadError("connection reset"),
                      httpx.RemoteProtocolError("server disconnected"), httpx.Response(201, json=job_json()))
    job = mock_api(server).submit("noop", {"a": 1}, priority=2, timeout_s=5, webhook="https://h.test/x", webhook_events=["completed"])
    assert job.id == JOB_ID and len(server.requests) == 4
    keys = {r.headers["Idempotency-Key"] for r in server.requests}
    bodies = {r.content for r in server.requests}
    assert len(keys) == 1 and uuid.UUID(keys.pop()).version == 4
    assert len(bodies) == 1
    assert json.loads(bodies.pop()) == {"type": "noop", "input": {"a": 1}, "priority": 2, "timeout_s": 5,
                                        "webhook": "https://h.test/x", "webhook_events": ["completed"]}
    assert server.requests[0].headers["Content-Type"] == "application/json"

    given = Recorder(httpx.Response(200, json=job_json()))
    mock_api(given).submit("noop", idempotency_key="my-key")
    assert given.requests[0].headers["Idempotency-Key"] == "my-key"
    assert json.loads(given.requests[0].content) == {"type": "noop"}


def test_submit_schedule_and_retry(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    from datetime import datetime, timedelta, timezone

    queued = job_json(not_before="2026-12-24T18:00:00Z", start_by="2026-12-24T18:01:00Z",
                      retry={"max_attempts": 3, "backoff_s": 5, "max_backoff_s": 300, "on": ["exit_code", 75]})
    server = Recorder(httpx.Response(201, json=queued))
    api = mock_api(server)
    when = datetime(2026, 12, 24, 19, 0, tzinfo=timezone(timedelta(hours=1)))
    job = api.submit("noop", retry=spool_client.JobRetry(3, backoff_s=5, on=["exit_code", 75]), run_at=when, start_within_s=60)
    assert json.loads(server.requests[0].content) == {
        "type": "noop", "retry": {"max_attempts": 3, "backoff_s": 5, "on": ["exit_code", 75]},
        "run_at": "2026-12-24T18:00:00Z", "start_within_s": 60,
    }
    assert job.not_before == when and job.start_by == when + timedelta(minutes=1)
    assert job.retry == spool_client.JobRetry(3, 5.0, 300.0, ["exit_code", 75])
    api.submit("noop", retry={"max_attempts": 2}, delay_s=1.5)
    assert json.loads(server.requests[1].content) == {"type": "noop", "retry": {"max_attempts": 2}, "delay_s": 1.5}
    with pytest.raises(ValueError):
        api.submit("noop", run_at=when, delay_s=1)  # not both: refused before anything is sent
    assert len(server.requests) == 2


def test_deadline_unreachable_is_not_retried(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    body = {"type": "urn:spool:problem:deadline-unreachable", "title": "Conflict", "status": 409, "detail": "d",
            "instance": "/v1/jobs", "queued_ahead": 4, "start_by": "2026-12-04T17:24:07Z",
            "estimate": {"start_in_s": 12.5, "start_at": "2026-12-04T17:24:18.5Z", "method": "m"}}
    server = Recorder(httpx.Response(409, json=body, headers={"Content-Type": "application/problem+json"}))
    with pytest.raises(spool_client.DeadlineUnreachable) as caught:
        mock_api(server).submit("noop", start_within_s=5)
    assert len(server.requests) == 1 and sleeps == []
    assert caught.value.queued_ahead == 4 and caught.value.estimate is not None and caught.value.estimate.start_in_s == 12.5


def test_attempts(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    listing = {"job": JOB_ID, "state": "queued", "max_attempts": 3, "retry": {"max_attempts": 3},
               "not_before": "2026-12-04T17:24:06Z",
               "attempts": [{"attempt": 1, "state": "queued", "reason": "exit_code", "exit_code": 1, "slot": 0,
                             "retry_at": "2026-12-04T17:24:06Z"}]}
    server = Recorder(problem(503, "storage-unavailable", {"Retry-After": "1"}), httpx.Response(200, json=listing))
    attempts = mock_api(server).attempts(JOB_ID)
    assert [r.url.path for r in server.requests] == [f"/v1/jobs/{JOB_ID}/attempts"] * 2 and sleeps == [1.0]
    assert attempts.job == JOB_ID and attempts.not_before == attempts[0].retry_at and attempts.retry == spool_client.JobRetry(3)
    assert [(a.attempt, a.state, a.reason, a.exit_code, a.slot) for a in attempts] == [(1, "queued", "exit_code", 1, 0)]
    missing = Recorder(problem(404, "not-found"))
    with pytest.raises(spool_client.NotFound):
        mock_api(missing).attempts(JOB_ID)


def test_cancel_is_not_resent_once_it_may_have_arrived(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    server = Recorder(httpx.ReadError("connection reset"))
    with pytest.raises(spool_client.ConnectionFailed):
        mock_api(server).cancel(JOB_ID)
    assert len(server.requests) == 1

    refused = Recorder(httpx.ConnectError("connection refused"), httpx.Response(202, json=job_json("running", cancel_requested=True)))
    job = mock_api(refused).cancel(JOB_ID)  # never sent the first time: safe to send again
    assert job.cancel_requested and len(refused.requests) == 2


def test_get_is_resent_after_a_dropped_connection(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    server = Recorder(httpx.ReadTimeout("timed out"), httpx.Response(200, json=job_json()))
    assert mock_api(server).get(JOB_ID).id == JOB_ID and len(server.requests) == 2


def test_connection_failed_names_the_url(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    server = Recorder(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(spool_client.ConnectionFailed) as caught:
        mock_api(server, retries=1).get(JOB_ID)
    assert len(server.requests) == 2
    assert str(caught.value) == f"could not connect to GET {URL}/v1/jobs/{JOB_ID}: [Errno 111] Connection refused"


def test_non_problem_error_body(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    page = httpx.Response(502, text="<html><body>\n<h1>Bad Gateway</h1></body></html>", headers={"Content-Type": "text/html"})
    server = Recorder(page)
    with pytest.raises(spool_client.ServerError) as caught:
        mock_api(server, retries=1).get(JOB_ID)
    assert len(server.requests) == 2  # a GET is retried after a proxy's 502
    assert caught.value.status == 502 and "Bad Gateway" in caught.value.detail and "\n" not in str(caught.value)

    posted = Recorder(page)
    with pytest.raises(spool_client.ServerError):
        mock_api(posted, retries=1).cancel(JOB_ID)
    assert len(posted.requests) == 1  # a cancel is not


def test_token_and_url(mock_api: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    server = Recorder(httpx.Response(200, json=job_json()))
    mock_api(server, token="s3cret").get(JOB_ID)
    request = server.requests[0]
    assert request.headers["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in str(request.url)
    assert request.headers["User-Agent"].startswith("spool-client/")
    assert str(request.url) == f"{URL}/v1/jobs/{JOB_ID}"

    monkeypatch.setenv("SPOOL_TOKEN", "from-env")
    monkeypatch.setenv("SPOOL_URL", "http://other.test:9000/prefix/")
    env = Recorder(httpx.Response(200, json=job_json()))
    mock_api(env, url=None).get(JOB_ID)
    assert env.requests[0].headers["Authorization"] == "Bearer from-env"
    assert str(env.requests[0].url) == f"http://other.test:9000/prefix/v1/jobs/{JOB_ID}"

    monkeypatch.delenv("SPOOL_TOKEN")
    anonymous = Recorder(httpx.Response(200, json=job_json()))
    mock_api(anonymous).get(JOB_ID)
    assert "Authorization" not in anonymous.requests[0].headers


def test_health_when_draining(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    body = {"status": "draining", "store": "sqlite", "slots": 1, "queued": 0, "unhealthy_workers": []}
    server = Recorder(httpx.Response(503, json=body, headers={"Retry-After": "5"}))
    health = mock_api(server).health()
    assert (health.ok, health.status, health.http_status) == (False, "draining", 503)
    assert len(server.requests) == 1 and sleeps == []


def test_quarantined_slots_in_health_and_queue_and_release(mock_api: Callable[..., Any]) -> None:
    entry = {"slot": 0, "gpu": "0", "reasons": ["GPU 0: GPU is lost"], "since": "2026-12-04T07:01:19.835581Z"}
    health = mock_api(Recorder(httpx.Response(200, json={"status": "degraded", "store": "sqlite", "slots": 2,
                                                         "unhealthy_workers": [], "quarantined_slots": [entry]}))).health()
    assert (health.ok, health.status, health.quarantined_slots) == (True, "degraded", [entry])
    slot = {"id": 0, "gpu": "0", "state": "quarantined", "job": None, "worker": None, "unhealthy": [],
            "quarantine": {"reasons": entry["reasons"], "since": entry["since"]}}
    queue = mock_api(Recorder(httpx.Response(200, json={"queued": 0, "accepting": True, "slots": [slot]}))).queue()
    assert queue.slots[0].state == "quarantined" and queue.slots[0].quarantine == slot["quarantine"]
    server = Recorder(httpx.Response(200, json={"slot": 0, "gpu": "0", "released": True}),
                      httpx.Response(200, json={"slot": 0, "gpu": "0", "released": False}), problem(409, "gpu-unhealthy"))
    api = mock_api(server)
    assert api.release_slot(0) is True and api.release_slot(0) is False
    with pytest.raises(spool_client.Conflict):
        api.release_slot(0)
    assert [(r.method, r.url.path) for r in server.requests] == [("POST", "/v1/slots/0/release")] * 3


def test_wait_long_polls(mock_api: Callable[..., Any]) -> None:
    server = Recorder(httpx.Response(200, json=job_json("running")), httpx.Response(200, json=job_json("queued")),
                      httpx.Response(200, json=job_json("succeeded", exit_code=0)))
    job = mock_api(server).wait(JOB_ID)
    assert job.state == "succeeded" and len(server.requests) == 3
    assert [r.url.params["wait"] for r in server.requests] == ["60", "60", "60"]
    assert server.requests[0].extensions["timeout"]["read"] >= 60


def test_list_follows_cursors(mock_api: Callable[..., Any]) -> None:
    def page(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        following = {None: "30", "30": "20", "20": None}[cursor]
        jobs = [job_json(id=f"job_{cursor}_{i}") for i in range(2)]
        return httpx.Response(200, json={"jobs": jobs, "next_cursor": following})

    server = Recorder(page)
    ids = [job.id for job in mock_api(server).list(state="queued", type="noop", page_size=2)]
    assert ids == ["job_None_0", "job_None_1", "job_30_0", "job_30_1", "job_20_0", "job_20_1"]
    assert [dict(r.url.params) for r in server.requests] == [
        {"limit": "2", "status": "queued", "type": "noop"},
        {"limit": "2", "status": "queued", "type": "noop", "cursor": "30"},
        {"limit": "2", "status": "queued", "type": "noop", "cursor": "20"},
    ]


# --- downloads -----------------------------------------------------------------------------

DATA = os.urandom(3 * 1024 * 1024 + 17)
ETAG = '"v1-' + hashlib.sha256(DATA).hexdigest()[:16] + '"'


class Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body in 64 KiB pieces that can break (httpx.ReadError) after `drop_after` bytes."""

    def __init__(self, data: bytes, drop_after: Optional[int] = None) -> None:
        self.data = data
        self.drop_after = drop_after

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for start in range(0, len(self.data), 65536):
            piece = self.data[start:start + 65536]
            if self.drop_after is not None and sent + len(piece) > self.drop_after:
                if self.drop_after > sent:
                    yield piece[: self.drop_after - sent]
                raise httpx.ReadError("connection reset by peer")
            sent += len(piece)
            yield piece

    async def __aiter__(self) -> Any:
        for piece in self.__iter__():
            yield piece


class FileServer:
    """Serves DATA like a server with (or without) Range support, dropping connections on cue."""

    def __init__(self, ranges: bool = True, etag: bool = True, drops: Optional[List[Optional[int]]] = None) -> None:
        self.ranges = ranges
        self.etag = etag
        self.drops = list(drops or [])
        self.requests: List[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert request.url.raw_path == f"/v1/jobs/{JOB_ID}/outputs/sub/blob%20one.bin".encode()
        drop = self.drops.pop(0) if self.drops else None
        headers = {"Content-Type": "application/octet-stream"}
        if self.etag:
            headers["ETag"] = ETAG
        if self.ranges:
            headers["Accept-Ranges"] = "bytes"
        wanted = request.headers.get("Range")
        if_range = request.headers.get("If-Range")
        if self.ranges and wanted and (if_range is None or if_range == ETAG):
            start = int(wanted.split("=")[1].rstrip("-"))
            if start >= len(DATA):
                return httpx.Response(416, headers={"Content-Range": f"bytes */{len(DATA)}"})
            headers["Content-Range"] = f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"
            headers["Content-Length"] = str(len(DATA) - start)
            return httpx.Response(206, headers=headers, stream=Body(DATA[start:], drop))
        headers["Content-Length"] = str(len(DATA))
        return httpx.Response(200, headers=headers, stream=Body(DATA, drop))


NAME = "sub/blob one.bin"


def test_download_resumes_a_part_file_with_range(mock_api: Callable[..., Any], tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    Path(f"{target}.part").write_bytes(DATA[:1_000_000])
    server = FileServer()
    assert mock_api(server).download(JOB_ID, NAME, target) == target
    assert target.read_bytes() == DATA and not Path(f"{target}.part").exists()
    assert len(server.requests) == 1
    assert server.requests[0].headers["Range"] == "bytes=1000000-"
    assert server.requests[0].headers["Accept-Encoding"] == "identity"


def test_download_resumes_after_a_dropped_connection(mock_api: Callable[..., Any], sleeps: List[float], tmp_path: Path) -> None:
    server = FileServer(drops=[1_234_567, 1_000_000])
    target = mock_api(server).download(JOB_ID, NAME, tmp_path)  # a folder: the output's own path in it
    assert target == tmp_path / "sub" / "blob one.bin" and target.read_bytes() == DATA
    assert [r.headers.get("Range") for r in server.requests] == [None, "bytes=1234567-", f"bytes={1_234_567 + 1_000_000}-"]
    assert [r.headers.get("If-Range") for r in server.requests] == [None, ETAG, ETAG]
    assert len(sleeps) == 2


def test_download_starts_over_when_a_range_gets_200(mock_api: Callable[..., Any], tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    Path(f"{target}.part").write_bytes(b"stale bytes of another file" * 1000)
    server = FileServer(ranges=False)
    mock_api(server).download(JOB_ID, NAME, target)
    assert target.read_bytes() == DATA
    assert server.requests[0].headers["Range"] == "bytes=27000-"
    assert len(server.requests) == 1


def test_download_without_range_support_restarts_after_a_drop(mock_api: Callable[..., Any], tmp_path: Path) -> None:
    server = FileServer(ranges=False, etag=False, drops=[1_000_000])
    target = mock_api(server).download(JOB_ID, NAME, tmp_path / "out.bin")
    assert target.read_bytes() == DATA
    assert [r.headers.get("Range") for r in server.requests] == [None, None]


def test_download_of_a_complete_part_file(mock_api: Callable[..., Any], tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    Path(f"{target}.part").write_bytes(DATA)
    server = FileServer()
    mock_api(server).download(JOB_ID, NAME, target)  # 416 with the same size: done
    assert target.read_bytes() == DATA and len(server.requests) == 1


def test_download_gives_up(mock_api: Callable[..., Any], tmp_path: Path) -> None:
    server = FileServer(drops=[0] * 10)  # every connection breaks before a byte arrives
    with pytest.raises(spool_client.ConnectionFailed):
        mock_api(server, retries=2).download(JOB_ID, NAME, tmp_path / "out.bin")
    assert len(server.requests) == 3
    assert not (tmp_path / "out.bin").exists()

    # Without Range support a drop loses what came: every drop counts, even after some bytes.
    no_ranges = FileServer(ranges=False, drops=[500_000] * 10)
    with pytest.raises(spool_client.ConnectionFailed):
        mock_api(no_ranges, retries=2).download(JOB_ID, NAME, tmp_path / "out.bin")
    assert [r.headers.get("Range") for r in no_ranges.requests] == [None, None, None]


# --- events --------------------------------------------------------------------------------


def sse(*events: Any, retry: Optional[int] = None) -> bytes:
    text = f"retry: {retry}\n\n" if retry is not None else ""
    for event_id, kind, data in events:
        text += f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(data)}\n\n"
    return text.encode()


def state(event_id: int, value: str) -> Any:
    return (event_id, "state", {"job": JOB_ID, "state": value, "type": "noop", "attempts": 1, "at": "2026-12-04T07:01:19.835581Z"})


def stream(body: bytes, drop_after: Optional[int] = None) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, stream=Body(body, drop_after))


def test_events_reconnect_with_last_event_id(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    outputs = (4, "outputs", {"job": JOB_ID, "outputs": [], "at": "2026-12-04T07:01:19.835581Z"})
    server = Recorder(
        stream(sse(state(1, "queued"), state(2, "running"), retry=500)),  # ends before the job does
        problem(503, "shutting-down", {"Retry-After": "1"}),
        httpx.ConnectError("connection refused"),
        stream(sse(state(3, "succeeded"), outputs) + sse(state(99, "queued"))),  # nothing is read past the outputs
    )
    events = list(mock_api(server).events(JOB_ID))
    assert [(e.id, e.event, e.state) for e in events] == [
        ("1", "state", "queued"), ("2", "state", "running"), ("3", "state", "succeeded"), ("4", "outputs", None)]
    assert [r.headers.get("Last-Event-ID") for r in server.requests] == [None, "2", "2", "2"]
    assert all(r.url.path == f"/v1/jobs/{JOB_ID}/events" for r in server.requests)
    assert sleeps == [0.5, 1.0, 0.5]  # retry: from the stream, Retry-After from the 503


def test_events_reconnect_after_a_broken_stream(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    first = sse(state(7, "queued"), state(8, "running"))
    server = Recorder(stream(first, drop_after=len(first) - 3),  # breaks inside event 8: it is dropped
                      stream(sse(state(8, "running"), state(9, "failed"))))
    events = list(mock_api(server).events(JOB_ID, last_event_id=6))
    assert [e.id for e in events] == ["7", "8", "9"]
    assert [r.headers.get("Last-Event-ID") for r in server.requests] == ["6", "7"]
    assert sleeps == [2.0]  # the default reconnection time


def test_all_events_stream_and_give_up(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    server = Recorder(stream(sse(state(1, "queued"), state(2, "succeeded"))), httpx.ConnectError("refused"))
    seen: List[str] = []
    with pytest.raises(spool_client.ConnectionFailed):
        for event in mock_api(server).events(reconnect_timeout=0):
            seen.append(str(event.id))
    assert seen == ["1", "2"]  # a global stream does not end with a job
    assert server.requests[0].url.path == "/v1/events"
    assert server.requests[-1].headers["Last-Event-ID"] == "2"


def test_events_not_found(mock_api: Callable[..., Any]) -> None:
    with pytest.raises(spool_client.NotFound):
        list(mock_api(Recorder(problem(404, "not-found"))).events(JOB_ID))


# --- result reuse and job arrays -----------------------------------------------------------

ARRAY_ID = "arr_" + "b" * 26


def array_json(state: str = "queued", **extra: Any) -> Dict[str, Any]:
    counts = {"queued": 3, "running": 0, "succeeded": 0, "failed": 0, "canceled": 0}
    body: Dict[str, Any] = {
        "id": ARRAY_ID, "type": "frame", "state": state, "size": 3, "counts": counts, "progress": 0, "fail_fast": False,
        "created_at": "2026-12-04T07:01:19.835581Z", "owner": None, "eta": None,
        "links": {"self": f"/v1/arrays/{ARRAY_ID}", "tasks": f"/v1/arrays/{ARRAY_ID}/tasks"},
    }
    body.update(extra)
    return body


def test_submit_with_dedup(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    server = Recorder(httpx.Response(201, json=job_json()),
                      httpx.Response(200, json=job_json("running"), headers={"Spool-Dedup": "joined"}),
                      httpx.Response(200, json=job_json("succeeded"), headers={"Spool-Dedup": "reused"}))
    api = mock_api(server)
    new = api.submit("noop", {"a": 1}, dedup="queued")
    joined = api.submit("noop", {"a": 1}, dedup_key="frame-7")
    reused = api.submit("noop", {"a": 1}, dedup={"succeeded_within_s": 3600}, dedup_key="frame-7")
    assert (new.dedup, joined.dedup, reused.dedup) == (None, "joined", "reused")
    assert joined == api_job("running") and reused.state == "succeeded"  # dedup is not part of equality
    assert [json.loads(r.content) for r in server.requests] == [
        {"type": "noop", "input": {"a": 1}, "dedup": "queued"},
        {"type": "noop", "input": {"a": 1}, "dedup_key": "frame-7"},
        {"type": "noop", "input": {"a": 1}, "dedup": {"succeeded_within_s": 3600}, "dedup_key": "frame-7"},
    ]
    with pytest.raises(TypeError):
        api.submit("noop", dedup=3600)
    assert len(server.requests) == 3


def api_job(state: str) -> spool_client.Job:
    return spool_client.Job.from_json(job_json(state))


def test_submit_array_body_and_answer(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    server = Recorder(problem(503, "shutting-down", {"Retry-After": "1"}), httpx.Response(201, json=array_json()))
    api = mock_api(server)
    array = api.submit_array("frame", {"scene": "a"}, items=("x", 2), fail_fast=True, priority=2, retry=2, delay_s=5)
    assert isinstance(array, spool_client.JobArray) and array.id == ARRAY_ID and array.counts.queued == 3
    assert len(server.requests) == 2 and sleeps == [1.0]
    assert len({r.headers["Idempotency-Key"] for r in server.requests}) == 1  # resent with the same key
    assert json.loads(server.requests[0].content) == {
        "type": "frame", "input": {"scene": "a"}, "priority": 2, "retry": {"max_attempts": 2}, "delay_s": 5,
        "array": {"items": ["x", 2], "fail_fast": True},
    }

    ranges = Recorder(httpx.Response(201, json=array_json()))
    api = mock_api(ranges)
    api.submit_array("frame", range=(1, 240), idempotency_key="frames")
    api.submit_array("frame", range=range(1, 241))  # a Python range: 1 to 240
    assert [json.loads(r.content) for r in ranges.requests] == [{"type": "frame", "array": {"range": [1, 240]}}] * 2
    assert ranges.requests[0].headers["Idempotency-Key"] == "frames"


@pytest.mark.parametrize("options, error", [
    ({}, ValueError),
    ({"items": [1], "range": (0, 1)}, ValueError),
    ({"items": []}, ValueError),
    ({"items": "abc"}, TypeError),
    ({"range": (3, 1)}, ValueError),
    ({"range": (0, 10_000)}, ValueError),
    ({"range": (0, 1, 2)}, TypeError),
    ({"range": (0.5, 2)}, TypeError),
    ({"range": range(0, 10, 2)}, ValueError),
    ({"range": (0, 1), "run_at": "2026-12-04T07:00:00Z", "delay_s": 1}, ValueError),
])
def test_submit_array_refused_before_sending(mock_api: Callable[..., Any], options: Dict[str, Any], error: type) -> None:
    server = Recorder(httpx.Response(201, json=array_json()))
    with pytest.raises(error):
        mock_api(server).submit_array("frame", **options)
    with pytest.raises(TypeError):
        mock_api(server).submit_array("frame", ["not", "a", "mapping"], range=(0, 1))
    assert server.requests == []


def test_array_tasks_follow_cursors(mock_api: Callable[..., Any]) -> None:
    def task(index: int) -> Dict[str, Any]:
        return job_json("succeeded", id=f"job_{index:026d}", input={"item": index}, array={"id": ARRAY_ID, "index": index})

    server = Recorder(
        httpx.Response(200, json={"array": ARRAY_ID, "tasks": [task(0), task(1)], "next_cursor": "1"}),
        httpx.Response(200, json={"array": ARRAY_ID, "tasks": [task(2)], "next_cursor": None}),
    )
    tasks = list(mock_api(server).array_tasks(ARRAY_ID, page_size=2))
    assert [t.array for t in tasks] == [spool_client.ArrayRef(ARRAY_ID, i) for i in range(3)]
    assert [(r.url.path, dict(r.url.params)) for r in server.requests] == [
        (f"/v1/arrays/{ARRAY_ID}/tasks", {"limit": "2"}), (f"/v1/arrays/{ARRAY_ID}/tasks", {"limit": "2", "cursor": "1"})]
    with pytest.raises(ValueError):
        list(mock_api(server).array_tasks(ARRAY_ID, page_size=501))


def test_array_outputs_and_cancel(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    listing = {"array": ARRAY_ID, "outputs": [
        {"task": JOB_ID, "index": 4, "name": "frame-4.png", "size": 10, "url": f"/v1/jobs/{JOB_ID}/outputs/frame-4.png"}]}
    server = Recorder(httpx.Response(200, json=listing))
    outputs = mock_api(server).array_outputs(ARRAY_ID)
    assert outputs == [spool_client.ArrayOutput(JOB_ID, 4, "frame-4.png", 10, f"/v1/jobs/{JOB_ID}/outputs/frame-4.png")]
    assert server.requests[0].url.path == f"/v1/arrays/{ARRAY_ID}/outputs"

    dropped = Recorder(httpx.ReadError("connection reset"))
    with pytest.raises(spool_client.ConnectionFailed):
        mock_api(dropped).cancel_array(ARRAY_ID)
    assert len(dropped.requests) == 1  # a cancel that may have arrived is not sent again
    stopping = Recorder(httpx.Response(202, json=array_json("running", counts={"queued": 0, "running": 1, "succeeded": 0,
                                                                                "failed": 0, "canceled": 2})))
    array = mock_api(stopping).cancel_array(ARRAY_ID)
    assert array.counts.canceled == 2 and stopping.requests[0].method == "POST"
    assert stopping.requests[0].url.path == f"/v1/arrays/{ARRAY_ID}/cancel"
    finished = Recorder(problem(409, "already-finished"))
    with pytest.raises(spool_client.AlreadyFinished):
        mock_api(finished).cancel_array(ARRAY_ID)


def test_wait_and_watch_array_poll_with_back_off(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    running = array_json("running", progress=0.5, counts={"queued": 1, "running": 1, "succeeded": 1, "failed": 0, "canceled": 0})
    done = array_json("succeeded", progress=1, counts={"queued": 0, "running": 0, "succeeded": 3, "failed": 0, "canceled": 0})
    script = [array_json(), running, running, running, done]
    server = Recorder(*(httpx.Response(200, json=body) for body in script))
    array = mock_api(server).wait_array(ARRAY_ID, interval=0.2)
    assert array.succeeded and array.progress == 1.0 and len(server.requests) == 5
    assert sleeps == pytest.approx([0.1, 0.15, 0.2, 0.2])  # from 0.1 s, ×1.5, up to the interval

    sleeps.clear()
    server = Recorder(*(httpx.Response(200, json=body) for body in script))
    seen = list(mock_api(server).watch_array(ARRAY_ID, interval=1))
    assert [(a.state, a.progress) for a in seen] == [("queued", 0.0), ("running", 0.5), ("succeeded", 1.0)]  # changes only
    assert len(server.requests) == 5

    still = Recorder(httpx.Response(200, json=running))
    with pytest.raises(spool_client.WaitTimeout) as caught:
        mock_api(still).wait_array(ARRAY_ID, timeout=0)
    assert caught.value.job.state == "running" and "1 of 3 tasks finished" in str(caught.value)
    with pytest.raises(ValueError):
        mock_api(still).wait_array(ARRAY_ID, interval=0)


# --- found by attacking the build: pools, restarts, local errors ----------------------------


class FakeClock:
    """A clock that moves only when the client sleeps: a ride-out's budget, checked exactly."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: List[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def native(api: Any) -> Any:
    """The client itself (the async one is wrapped by the fixture)."""
    return getattr(api, "_client", api)


def clocked_api(make_api: Callable[..., Any], handler: Callable[[httpx.Request], httpx.Response], clock: FakeClock,
                **options: Any) -> Any:
    api = make_api(URL, transport=httpx.MockTransport(handler), sleep=clock.sleep, **options)
    native(api)._clock = clock
    return api


def test_a_full_pool_is_reported_as_such_and_not_retried(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    # httpx's PoolTimeout was retried as "not sent" and reported as "could not connect".
    server = Recorder(httpx.PoolTimeout("timed out waiting for a connection"))
    with pytest.raises(spool_client.PoolFull) as caught:
        mock_api(server, limits=httpx.Limits(max_connections=4)).wait(JOB_ID)
    assert len(server.requests) == 1 and sleeps == []
    message = str(caught.value)
    assert "could not connect" not in message and "all 4 connections" in message and "limits=" in message
    assert isinstance(caught.value, spool_client.ConnectionFailed)  # still caught where that is


def test_default_limits_have_no_connection_cap() -> None:
    assert spool_client.DEFAULT_LIMITS.max_connections is None
    assert spool_client.DEFAULT_LIMITS.max_keepalive_connections is not None


def test_tls_verification_failure_is_reported_at_once(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    import ssl

    def refuse(request: httpx.Request) -> httpx.Response:
        error = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate")
        error.__cause__ = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
        raise error

    server = Recorder(refuse)
    with pytest.raises(spool_client.ConnectionFailed) as caught:
        mock_api(server).submit("noop")
    assert len(server.requests) == 1 and sleeps == []
    assert "TLS certificate verification failed" in str(caught.value)


def test_submit_rides_out_a_restart_with_one_idempotency_key(make_api: Callable[..., Any]) -> None:
    clock = FakeClock()
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    draining = problem(503, "shutting-down", {"Retry-After": "5"})
    server = Recorder(draining, draining, refused, refused, refused, refused, refused, httpx.ReadError("reset"),
                      httpx.Response(201, json=job_json()))
    job = clocked_api(make_api, server, clock).submit("noop", {"a": 1})
    assert job.id == JOB_ID and len(server.requests) == 9
    assert len({r.headers["Idempotency-Key"] for r in server.requests}) == 1
    assert len({r.content for r in server.requests}) == 1
    assert clock.sleeps[:2] == [5.0, 5.0] and all(s <= 2.0 for s in clock.sleeps[2:])


def test_a_full_disk_is_no_restart_to_ride_out(make_api: Callable[..., Any]) -> None:
    # A 503 storage-unavailable is raised after the usual retries, not after restart_timeout
    # (found in review: a submit took 30 s to say the server's disk was full).
    clock = FakeClock()
    server = Recorder(problem(503, "storage-unavailable", {"Retry-After": "1"}))
    with pytest.raises(spool_client.Unavailable):
        clocked_api(make_api, server, clock, restart_timeout=30, retries=2).submit("noop")
    assert len(server.requests) == 3 and clock.now - 1000 < 5


def test_submit_gives_up_after_restart_timeout(make_api: Callable[..., Any]) -> None:
    clock = FakeClock()
    server = Recorder(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(spool_client.ConnectionFailed) as caught:
        clocked_api(make_api, server, clock, restart_timeout=10).submit("noop")
    assert 10 <= clock.now - 1000 <= 10.01 and "still failing after 10 s" in str(caught.value)

    clock = FakeClock()
    only_retries = Recorder(httpx.ConnectError("[Errno 111] Connection refused"))
    with pytest.raises(spool_client.ConnectionFailed):
        clocked_api(make_api, only_retries, clock, restart_timeout=0, retries=2).submit("noop")
    assert len(only_retries.requests) == 3

    # A cancel is not resent once it may have arrived, restart or not.
    reset = Recorder(httpx.ReadError("reset"))
    with pytest.raises(spool_client.ConnectionFailed):
        clocked_api(make_api, reset, FakeClock()).cancel(JOB_ID)
    assert len(reset.requests) == 1


def test_wait_rides_out_a_restart(make_api: Callable[..., Any]) -> None:
    clock = FakeClock()
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    draining = problem(503, "shutting-down", {"Retry-After": "5"})
    server = Recorder(httpx.Response(200, json=job_json("running")), httpx.ReadError("reset"), draining,
                      *([refused] * 20), httpx.Response(200, json=job_json("succeeded", exit_code=0)))
    job = clocked_api(make_api, server, clock).wait(JOB_ID, timeout=600)
    assert job.state == "succeeded" and len(server.requests) == 24

    # ... for reconnect_timeout (120 s by default), then ConnectionFailed; never past its timeout.
    for options, budget in (({}, 120), ({"reconnect_timeout": 30}, 30), ({"timeout": 7}, 7)):
        clock = FakeClock()
        down = Recorder(refused)
        with pytest.raises(spool_client.ConnectionFailed):
            clocked_api(make_api, down, clock).wait(JOB_ID, **options)
        assert budget <= clock.now - 1000 <= budget + 0.01, options


def test_a_ride_out_without_limit_keeps_going(make_api: Callable[..., Any]) -> None:
    # reconnect_timeout=None: as long as it takes (more tries than 2.0 ** attempt can count).
    clock = FakeClock()
    server = Recorder(*([httpx.ConnectError("[Errno 111] Connection refused")] * 1100), httpx.Response(200, json=job_json("succeeded")))
    assert clocked_api(make_api, server, clock).wait(JOB_ID, reconnect_timeout=None).state == "succeeded"
    assert len(server.requests) == 1101 and max(clock.sleeps) <= 2.0


def test_follow_logs_and_wait_array_ride_out_a_restart(make_api: Callable[..., Any]) -> None:
    refused = httpx.ConnectError("[Errno 111] Connection refused")
    draining = problem(503, "shutting-down", {"Retry-After": "1"})

    def logs(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            offset = int(request.url.params["offset"])
            text = b"line 1\nline 2\n"[offset:]
            return httpx.Response(200, content=text, headers={"Spool-Next-Offset": str(offset + len(text))})
        return httpx.Response(200, json=job_json("succeeded"))

    server = Recorder(refused, refused, refused, refused, draining, refused, logs)
    text = "".join(clocked_api(make_api, server, FakeClock()).logs(JOB_ID, follow=True))
    assert text == "line 1\nline 2\n"

    running = array_json("running")
    done = array_json("succeeded", counts={"queued": 0, "running": 0, "succeeded": 3, "failed": 0, "canceled": 0})
    arrays = Recorder(httpx.Response(200, json=running), *([refused] * 6), draining, httpx.Response(200, json=done))
    assert clocked_api(make_api, arrays, FakeClock()).wait_array(ARRAY_ID, timeout=600).succeeded
    assert len(arrays.requests) == 9


def test_follow_logs_goes_on_where_the_server_says_after_a_cut(make_api: Callable[..., Any]) -> None:
    # A log cut at its head while followed: the answer holds what is left from its start (with
    # Spool-Log-Trimmed), longer than what came after the follower's offset; the follower goes on
    # at Spool-Next-Offset, not past it (where it would be told "cut" again, and again).
    answers = {0: (b"0123456789", 10, False), 10: (b"[cut]\nabc\n", 14, True), 14: (b"", 14, False)}
    looks, wrong = [], []

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/logs"):
            offset = int(request.url.params["offset"])
            if offset not in answers:
                wrong.append(offset)
            text, following, trimmed = answers.get(offset, (b"", offset, False))
            headers = {"Spool-Next-Offset": str(following)}
            if trimmed:
                headers["Spool-Log-Trimmed"] = "1"
            return httpx.Response(200, content=text, headers=headers)
        looks.append(1)
        return httpx.Response(200, json=job_json("running" if len(looks) < 3 else "succeeded"))

    text = "".join(clocked_api(make_api, Recorder(server), FakeClock()).logs(JOB_ID, follow=True))
    assert text == "0123456789[cut]\nabc\n" and wrong == []


def test_events_resumed_at_the_end_end(mock_api: Callable[..., Any], sleeps: List[float]) -> None:
    # 204 ("stop reconnecting") answers a job's stream resumed after its end.
    done = Recorder(httpx.Response(204))
    assert list(mock_api(done).events(JOB_ID, last_event_id=6)) == []
    # Resumed between its final state and its outputs: the outputs end it, with no reconnection.
    outputs = (6, "outputs", {"job": JOB_ID, "outputs": [], "at": "2026-12-04T07:01:19.835581Z"})
    rest = Recorder(stream(sse(outputs)), httpx.Response(204))
    assert [e.event for e in mock_api(rest).events(JOB_ID, last_event_id=5)] == ["outputs"]
    assert len(rest.requests) == 1 and sleeps == []


def test_tokens_are_stripped_and_never_shown(mock_api: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    server = Recorder(httpx.Response(200, json=job_json()))
    mock_api(server, token="spool_secret123\n").get(JOB_ID)  # read from a file, with its newline
    monkeypatch.setenv("SPOOL_TOKEN", "  spool_fromenv\r\n")
    mock_api(server, url=URL).get(JOB_ID)
    assert [r.headers["Authorization"] for r in server.requests] == ["Bearer spool_secret123", "Bearer spool_fromenv"]

    for bad in ("spool_secret1\nspool_secret2", "spool_sécret", "spool_secret\x00x"):
        with pytest.raises(ValueError) as caught:
            mock_api(server, token=bad)
        assert "token" in str(caught.value) and "secret" not in str(caught.value)
    assert len(server.requests) == 2

    # A request httpx refuses to write is a local error, and does not quote the token.
    local = Recorder(httpx.LocalProtocolError("Illegal header value b'Bearer spool_secret123'"))
    with pytest.raises(ValueError) as refused:
        mock_api(local, token="spool_secret123").get(JOB_ID)
    assert "spool_secret123" not in str(refused.value) and "[token]" in str(refused.value)
    assert not isinstance(refused.value, spool_client.ConnectionFailed) and len(local.requests) == 1


def test_header_arguments_are_checked_before_sending(mock_api: Callable[..., Any]) -> None:
    server = Recorder(httpx.Response(201, json=job_json()))
    api = mock_api(server)
    for key in ("a\nb", "clé", "a\rb"):
        with pytest.raises(ValueError, match="idempotency_key") as caught:
            api.submit("noop", idempotency_key=key)
        assert not isinstance(caught.value, UnicodeError)
        with pytest.raises(ValueError, match="idempotency_key"):
            api.retry_array(ARRAY_ID, idempotency_key=key)
    with pytest.raises(ValueError, match="last_event_id"):
        list(api.events(JOB_ID, last_event_id="5\n6"))
    with pytest.raises(ValueError, match="user_agent"):
        mock_api(server, user_agent="me\n")
    assert server.requests == []


def test_nan_and_infinity_are_refused_before_sending(mock_api: Callable[..., Any]) -> None:
    server = Recorder(httpx.Response(201, json=job_json()))
    api = mock_api(server)
    with pytest.raises(ValueError, match=r"input\.stats\.values\[1\] is nan: JSON has no NaN or infinity"):
        api.submit("noop", {"stats": {"values": [1.0, float("nan")]}})
    with pytest.raises(ValueError, match=r"input\.limit is -inf"):
        api.submit_array("noop", {"limit": float("-inf")}, range=(0, 1))
    with pytest.raises(ValueError, match=r"delay_s is inf"):
        api.submit("noop", delay_s=float("inf"))
    assert server.requests == []


def test_retry_zero_is_refused_before_sending(mock_api: Callable[..., Any]) -> None:
    server = Recorder(httpx.Response(201, json=job_json()))
    with pytest.raises(ValueError, match="retry=0"):
        mock_api(server).submit("noop", retry=0)
    assert server.requests == []


def test_queue_has_queued_mine(mock_api: Callable[..., Any]) -> None:
    mine = mock_api(Recorder(httpx.Response(200, json={"queued": 5, "queued_mine": 3, "accepting": True, "slots": []}))).queue()
    assert (mine.queued, mine.queued_mine) == (5, 3)
    assert mock_api(Recorder(httpx.Response(200, json={"queued": 5, "accepting": True, "slots": []}))).queue().queued_mine is None
