"""Jobs against the real server: every test runs with the sync client and the async one."""

from __future__ import annotations

import hashlib
import signal
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import spool_client
from spool_client import Client, Job

from conftest import SpoolServer, free_port, server_config


def until_running(spool: Client, job_id: str, limit: float = 10.0) -> Job:
    deadline = time.monotonic() + limit
    while True:
        job = spool.get(job_id, wait=min(1.0, max(0.1, deadline - time.monotonic())))
        if job.state != "queued" or time.monotonic() > deadline:
            assert job.state == "running", job
            return job


def test_submit_get_wait(api: Any) -> None:
    job = api.submit("noop")
    assert job.id.startswith("job_") and job.type == "noop"
    assert job.state in ("queued", "running")
    assert isinstance(job.created_at, datetime) and job.created_at.tzinfo is not None
    assert job.links["self"] == f"/v1/jobs/{job.id}"
    assert api.get(job.id).id == job.id
    done = api.wait(job.id, timeout=15)
    assert done.state == "succeeded" and done.done and done.succeeded
    assert done.exit_code == 0 and done.attempts == 1
    assert done.started_at is not None and done.finished_at is not None and done.finished_at >= done.started_at
    assert done.raw["id"] == job.id  # the whole JSON is kept


def test_submit_options(api: Any) -> None:
    job = api.submit("sleep", {"seconds": 0}, priority=5, timeout_s=10)
    assert (job.priority, job.timeout_s, job.input) == (5, 10.0, {"seconds": 0})
    assert api.wait(job.id, timeout=15).state == "succeeded"


def test_list_follows_cursors(api: Any) -> None:
    submitted = [api.submit("pager").id for _ in range(7)]
    ids = [job.id for job in api.list(type="pager", page_size=3)]  # at least 3 pages
    assert len(ids) == len(set(ids)) and len(ids) >= 7
    assert ids[:7] == submitted[::-1]  # newest first
    for job_id in submitted:
        api.wait(job_id, timeout=15)
    succeeded = [job.id for job in api.list(state="succeeded", type="pager", page_size=2)]
    assert set(submitted) <= set(succeeded)
    assert all(job.type == "noop" for job in api.list(type="noop", page_size=500))


def test_wait_times_out(api: Any, spool: Client) -> None:
    job = api.submit("sleep", {"seconds": 30})
    started = time.monotonic()
    with pytest.raises(spool_client.WaitTimeout) as caught:
        api.wait(job.id, timeout=1.0)
    assert 0.9 <= time.monotonic() - started < 6
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.job.id == job.id and caught.value.job.state in ("queued", "running")
    spool.cancel(job.id)


def test_cancel_queued_and_running(api: Any, spool: Client) -> None:
    blocker = api.submit("sleep", {"seconds": 30})
    until_running(spool, blocker.id)
    queued = api.submit("noop")
    assert queued.state == "queued" and queued.position == 1

    canceled = api.cancel(queued.id)  # 200: canceled at once
    assert (canceled.state, canceled.reason) == ("canceled", "canceled")

    stopping = api.cancel(blocker.id)  # 202: stopping
    assert stopping.state in ("running", "canceled")
    assert stopping.cancel_requested or stopping.state == "canceled"
    final = api.wait(blocker.id, timeout=15)
    assert (final.state, final.reason) == ("canceled", "canceled")

    with pytest.raises(spool_client.Conflict) as caught:
        api.cancel(blocker.id)  # 409: already finished
    assert isinstance(caught.value, spool_client.AlreadyFinished)
    assert caught.value.status == 409 and caught.value.code == "already-finished"


def test_delete_an_ended_job(api: Any, spool: Client) -> None:
    blocker = api.submit("sleep", {"seconds": 30})
    until_running(spool, blocker.id)
    with pytest.raises(spool_client.Conflict) as caught:
        api.delete(blocker.id)  # 409: it has not ended
    assert isinstance(caught.value, spool_client.NotEnded)
    assert caught.value.status == 409 and caught.value.code == "not-ended"
    api.cancel(blocker.id)
    assert api.wait(blocker.id, timeout=15).state == "canceled"

    key = f"delete-{uuid.uuid4()}"
    done = api.wait(api.submit("noop", idempotency_key=key).id, timeout=15)
    assert done.state == "succeeded"
    assert api.delete(done.id) is None  # 204
    with pytest.raises(spool_client.NotFound):
        api.get(done.id)
    with pytest.raises(spool_client.NotFound):
        api.delete(done.id)
    again = api.submit("noop", idempotency_key=key)  # the key is free again
    assert again.id != done.id
    api.delete(blocker.id)


def test_logs_and_follow(api: Any) -> None:
    job = api.submit("chatty", {"lines": 6, "delay": 0.2})
    chunks = list(api.logs(job.id, follow=True))
    followed = "".join(chunks)
    expected = "".join(f"line {i}\n" for i in range(1, 7))
    assert expected in followed
    assert api.get(job.id).done
    assert api.logs(job.id) == followed


def test_outputs_and_download(api: Any, server: SpoolServer, tmp_path: Path) -> None:
    size = 3_000_000 + 123
    job = api.submit("files", {"bytes": size})
    assert api.wait(job.id, timeout=15).state == "succeeded"
    outputs = api.outputs(job.id)
    assert [(o.name, o.size) for o in outputs] == [("blob.bin", size)]
    assert isinstance(outputs, spool_client.OutputList) and outputs.truncated is False
    assert outputs[0].url == f"/v1/jobs/{job.id}/outputs/blob.bin"
    expected = hashlib.sha256((server.data_dir / "jobs" / job.id / "outputs" / "blob.bin").read_bytes()).hexdigest()

    target = api.download(job.id, "blob.bin", tmp_path / "copy.bin")
    assert target == tmp_path / "copy.bin"
    assert hashlib.sha256(target.read_bytes()).hexdigest() == expected
    assert not (tmp_path / "copy.bin.part").exists()

    folder = tmp_path / "folder"
    folder.mkdir()
    into = api.download(job.id, "blob.bin", folder)  # a folder: the file goes in it under its name
    assert into == folder / "blob.bin" and hashlib.sha256(into.read_bytes()).hexdigest() == expected

    # A .part left by an earlier try: resumed with Range, or fetched whole by a server without it (test_download.py checks which).
    data = into.read_bytes()
    again = tmp_path / "again.bin"
    Path(str(again) + ".part").write_bytes(data[:1_000_000])
    api.download(job.id, "blob.bin", again)
    assert hashlib.sha256(again.read_bytes()).hexdigest() == expected

    with pytest.raises(spool_client.NotFound):
        api.download(job.id, "missing.bin", tmp_path / "missing.bin")
    assert not (tmp_path / "missing.bin").exists()


def test_typed_errors(api: Any) -> None:
    unknown = "job_" + "0" * 26
    with pytest.raises(spool_client.NotFound) as not_found:
        api.get(unknown)
    error = not_found.value
    assert (error.status, error.code, error.type) == (404, "not-found", "urn:spool:problem:not-found")
    assert unknown in error.detail and error.instance == f"/v1/jobs/{unknown}"

    with pytest.raises(spool_client.InvalidInput) as invalid:
        api.submit("sleep", {"seconds": -1})
    assert invalid.value.status == 422 and invalid.value.code == "invalid-input"
    assert any("/seconds" in e for e in invalid.value.errors)

    with pytest.raises(spool_client.InvalidInput) as unknown_type:
        api.submit("no-such-type")
    assert unknown_type.value.code == "unknown-type"

    with pytest.raises(spool_client.BadRequest) as bad:
        list(api.list(state="bogus"))
    assert bad.value.status == 400

    key = str(uuid.uuid4())
    api.submit("noop", idempotency_key=key)
    with pytest.raises(spool_client.Conflict) as conflict:
        api.submit("noop", priority=3, idempotency_key=key)
    assert isinstance(conflict.value, spool_client.IdempotencyConflict)
    assert conflict.value.status == 409 and conflict.value.code == "idempotency-conflict"


def test_idempotent_resubmit(api: Any) -> None:
    key = str(uuid.uuid4())
    first = api.submit("sleep", {"seconds": 0}, idempotency_key=key)
    second = api.submit("sleep", {"seconds": 0}, idempotency_key=key)
    assert second.id == first.id
    api.wait(first.id, timeout=15)
    third = api.submit("sleep", {"seconds": 0}, idempotency_key=key)
    assert third.id == first.id and third.state == "succeeded"


def test_server_info(api: Any) -> None:
    names = {t.name: t for t in api.types()}
    assert {"sleep", "noop", "render"} <= set(names)
    assert names["sleep"].command_input_keys == ["seconds"] and names["render"].mode == "worker"
    queue = api.queue()
    assert queue.accepting and len(queue.slots) == 1 and queue.slots[0].id == 0
    health = api.health()
    assert health.ok and health.status == "ok" and health.store == "sqlite"


def test_unreachable_server(make_api: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = make_api(url, retries=1)
    started = time.monotonic()
    with pytest.raises(spool_client.ConnectionFailed) as caught:
        client.get("job_" + "0" * 26)
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert url in message and "\n" not in message
    assert isinstance(caught.value, ConnectionError) and isinstance(caught.value, spool_client.SpoolError)


def test_unavailable_while_shutting_down(make_api: Any, spawn_server: Any) -> None:
    config = server_config()
    config["shutdown_grace_s"] = 4  # a running job keeps the server draining this long
    server = spawn_server(config)
    # restart_timeout=0: only the 2 retries (a submit otherwise rides out a restart for 30 s).
    api = make_api(server.url, retries=2, max_retry_wait=0.3, restart_timeout=0)
    job = api.submit("sleep", {"seconds": 30})
    with Client(server.url) as check:
        until_running(check, job.id)
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 5
    while api.health().status != "draining" and time.monotonic() < deadline:
        time.sleep(0.05)
    health = api.health()
    assert (health.ok, health.status) == (False, "draining")
    started = time.monotonic()
    with pytest.raises(spool_client.Unavailable) as caught:
        api.submit("noop")  # 503 three times (retried after Retry-After, capped at 0.3 s), then raised
    assert 0.5 <= time.monotonic() - started < 3.5
    assert caught.value.code == "shutting-down" and caught.value.retry_after == 5.0


def test_outputs_say_when_the_server_lists_only_some(api: Any) -> None:
    job = api.submit("many", {"n": 10_003})
    assert api.wait(job.id, timeout=30).state == "succeeded"
    outputs = api.outputs(job.id)
    assert len(outputs) == 10_000 and outputs.truncated is True
