"""Tokens, tenants and limits against the real server, with the sync and the async client."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, List

import pytest

import spool_client
from spool_client import Client

from conftest import AUTH_WEBHOOK_SECRET, SpoolServer, free_port
from test_events import consume_with_restart, states_of

UNKNOWN = "job_" + "0" * 26


def test_unauthorized(make_api: Callable[..., Any], auth_server: SpoolServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPOOL_TOKEN", raising=False)
    slept: List[float] = []
    for token, code in ((None, "unauthorized"), ("spool_not_a_real_token", "invalid-token")):
        api = make_api(auth_server.url, token=token, sleep=slept.append)
        with pytest.raises(spool_client.Unauthorized) as caught:
            api.get(UNKNOWN)
        assert (caught.value.status, caught.value.code) == (401, code)
        assert caught.value.headers.get("www-authenticate", "").startswith("Bearer")
        with pytest.raises(spool_client.Unauthorized):
            api.submit("noop")
        with pytest.raises(spool_client.Unauthorized):
            next(iter(api.events()))
        if token is None:
            assert api.health().ok  # /healthz stays open for load balancers
    assert slept == []  # a 401 is never retried


def test_other_tenants_job_is_not_found(make_api: Callable[..., Any], auth_server: SpoolServer, tmp_path: Path) -> None:
    tokens = auth_server.tokens
    alice = make_api(auth_server.url, token=tokens["alice"])
    bob = make_api(auth_server.url, token=tokens["bob"])
    admin = make_api(auth_server.url, token=tokens["admin"])

    job = alice.submit("files", {"bytes": 1000})
    assert job.owner == "alice"
    assert alice.wait(job.id, timeout=15).succeeded

    with pytest.raises(spool_client.NotFound) as unknown:
        bob.get(UNKNOWN)
    calls = {
        "get": lambda: bob.get(job.id),
        "cancel": lambda: bob.cancel(job.id),
        "outputs": lambda: bob.outputs(job.id),
        "logs": lambda: bob.logs(job.id),
        "download": lambda: bob.download(job.id, "blob.bin", tmp_path / "stolen.bin"),
        "events": lambda: list(bob.events(job.id)),
    }
    for name, call in calls.items():
        with pytest.raises(spool_client.NotFound) as caught:
            call()
        error = caught.value
        assert (error.status, error.code) == (404, "not-found"), name
        if name == "get":  # exactly like an id that does not exist
            assert error.detail.replace(job.id, UNKNOWN) == unknown.value.detail
    assert not (tmp_path / "stolen.bin").exists()
    assert job.id not in {j.id for j in bob.list(type="files")}

    assert job.id in {j.id for j in alice.list(type="files")}
    assert alice.download(job.id, "blob.bin", tmp_path / "mine.bin").stat().st_size == 1000
    seen = admin.get(job.id)  # an administrator sees every tenant's jobs
    assert seen.owner == "alice" and seen.succeeded
    # …and lists one tenant's with `owner`; a tenant may name only itself.
    assert job.id in {j.id for j in admin.list(type="files", owner="alice")}
    assert job.id not in {j.id for j in admin.list(type="files", owner="bob")}
    assert all(j.owner == "alice" for j in alice.list(owner="alice"))
    with pytest.raises(spool_client.Forbidden):
        list(bob.list(owner="alice"))
    with pytest.raises(spool_client.Forbidden):
        list(bob.arrays(owner="alice"))
    frames = alice.submit_array("noop", items=[1])
    assert [a.id for a in admin.arrays(owner="alice")][0] == frames.id
    assert frames.id not in {a.id for a in admin.arrays(owner="bob")}


def test_rate_limit_is_retried_after_retry_after(make_api: Callable[..., Any], auth_server: SpoolServer) -> None:
    """A token with `--rate 1`: submits past one a second get 429 + Retry-After; the client
    waits that long and sends the same submit again."""
    slept: List[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    token = auth_server.tokens["limited"]
    with Client(auth_server.url, token=token) as check:
        before = sum(1 for _ in check.list(type="noop"))
    api = make_api(auth_server.url, token=token, sleep=sleep, retries=5)
    started = time.monotonic()
    jobs = [api.submit("noop") for _ in range(3)]
    elapsed = time.monotonic() - started
    assert len({job.id for job in jobs}) == 3 and all(job.owner == "limited" for job in jobs)
    assert len(slept) >= 2 and all(seconds == 1.0 for seconds in slept)  # Retry-After: 1
    assert elapsed >= sum(slept) >= 2.0
    with Client(auth_server.url, token=token) as check:
        assert sum(1 for _ in check.list(type="noop")) == before + 3  # a refused submit stored nothing
        for job in jobs:
            check.wait(job.id, timeout=15)


def test_rate_limited_error(make_api: Callable[..., Any], auth_server: SpoolServer) -> None:
    api = make_api(auth_server.url, token=auth_server.tokens["limited"], retries=0)
    with pytest.raises(spool_client.RateLimited) as caught:
        for _ in range(3):  # one a second: at least one of three at once is refused
            api.submit("noop")
    error = caught.value
    assert (error.status, error.code, error.limit) == (429, "rate-limited", "token rate")
    assert error.retry_after is not None and 0 < error.retry_after <= 2
    assert error.headers["retry-after"] == "1"
    time.sleep(error.retry_after)


def test_tenant_events_resume_across_restart(make_api: Callable[..., Any], spawn_server: Callable[..., SpoolServer]) -> None:
    """A tenant's stream of all its jobs, across a server restart: the token is sent again on
    every reconnection, nothing is missed or repeated, and another tenant's job never shows."""
    server = spawn_server(port=free_port(), tokens={"alice": [], "bob": []})
    alice = make_api(server.url, token=server.tokens["alice"])
    with Client(server.url, token=server.tokens["bob"]) as bob:
        other = bob.submit("noop")
    job = alice.submit("ticker", {"delay": 0.15})
    events = consume_with_restart(alice, server, job.id, alice.events(last_event_id=0))

    assert {e.job_id for e in events} == {job.id}  # bob's job is not in alice's stream
    states = states_of(events, job.id)
    assert states[0] == "queued" and states[-1] == "succeeded" and states.count("running") == 2
    ids = [int(str(e.id)) for e in events]
    assert ids == sorted(set(ids))
    with Client(server.url, token=server.tokens["alice"]) as check:
        replay = list(check.events(job.id))
    assert [e.id for e in replay] == [e.id for e in events]
    with Client(server.url, token=server.tokens["bob"]) as bob:
        assert bob.wait(other.id, timeout=10).succeeded


def test_each_tenant_verifies_its_deliveries_with_its_own_secret(make_api: Callable[..., Any], auth_server: SpoolServer,
                                                                 server: SpoolServer) -> None:
    import hashlib
    import hmac
    import http.server
    import threading

    tokens = auth_server.tokens
    alice = make_api(auth_server.url, token=tokens["alice"])
    bob = make_api(auth_server.url, token=tokens["bob"])
    admin = make_api(auth_server.url, token=tokens["admin"])
    secret = alice.webhook_secret()
    assert len(secret) == 64 and secret != AUTH_WEBHOOK_SECRET
    # Not computable from webhook_secret alone: the store's own key is in it.
    assert secret != hmac.new(AUTH_WEBHOOK_SECRET.encode(), b"spool-webhook-secret:alice", hashlib.sha256).hexdigest()
    assert bob.webhook_secret() != secret
    assert admin.webhook_secret(owner="alice") == secret
    assert alice.webhook_secret(owner="alice") == secret
    with pytest.raises(spool_client.Forbidden):
        bob.webhook_secret(owner="alice")
    with pytest.raises(spool_client.NotFound):  # a server without webhook_secret signs nothing
        make_api(server.url).webhook_secret()

    received: List[Any] = []
    arrived = threading.Event()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()
            arrived.set()

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    try:
        job = alice.submit("noop", webhook=f"http://127.0.0.1:{receiver.server_address[1]}/hook")
        assert alice.wait(job.id, timeout=15).succeeded
        assert arrived.wait(15), "no delivery"
    finally:
        receiver.shutdown()
        receiver.server_close()
    headers, body = received[0]
    assert spool_client.verify_webhook(secret, headers, body)
    assert spool_client.verify_webhook(secret.encode(), {k.upper(): v for k, v in headers.items()}, body)
    assert not spool_client.verify_webhook(bob.webhook_secret(), headers, body), "another tenant's secret"
    assert not spool_client.verify_webhook(AUTH_WEBHOOK_SECRET, headers, body), "the server's own"
    assert not spool_client.verify_webhook(secret, headers, body.replace(b"noop", b"nope")), "a changed body"
    sent = int(headers["Spool-Webhook-Timestamp"])
    assert not spool_client.verify_webhook(secret, headers, body, now=sent + 301), "replayed later"
    assert spool_client.verify_webhook(secret, headers, body, now=sent + 299)


def test_queue_counts_a_tenants_own_queued_jobs(make_api: Callable[..., Any], auth_server: SpoolServer) -> None:
    bob = make_api(auth_server.url, token=auth_server.tokens["bob"])
    before = bob.queue().queued_mine
    assert isinstance(before, int)
    job = bob.submit("noop", delay_s=60)
    assert bob.queue().queued_mine == before + 1
    bob.cancel(job.id)
    assert make_api(auth_server.url, token=auth_server.tokens["admin"]).queue().queued_mine is None
