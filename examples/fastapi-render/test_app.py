"""The render API against a real Spool: `spool serve --port 0 --data-dir TMP --gpus none`, and the
app under uvicorn on a free port in this process.

    cd examples/fastapi-render && python3 -m pytest -q test_app.py

The server binary is `$SPOOL_BINARY`, else the repository's `.build/debug/spool` (copied first,
since a build may replace it); without one the tests are skipped. The server is stopped by PID
(SIGTERM, then SIGKILL) and its data folder removed. Each test is limited to 60 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import httpx
import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
try:
    import spool_client  # noqa: F401  (installed: pip install clients/python/spool-client)
except ImportError:  # a plain checkout: the client's sources
    sys.path.insert(0, str(REPO / "clients" / "python" / "spool-client" / "src"))
sys.path.insert(0, str(HERE))

import uvicorn  # noqa: E402

from app import create_app  # noqa: E402
from spool_client import SSEParser  # noqa: E402

TEST_LIMIT_S = 60
SMALL = {"width": 32, "height": 24, "samples": 1}
BIG = {"width": 1024, "height": 768, "samples": 256}  # runs far longer than the test: it is canceled


@pytest.fixture(autouse=True)
def time_limit() -> Iterator[None]:
    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the test ran past {TEST_LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, TEST_LIMIT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def spool_url() -> Iterator[str]:
    given = os.environ.get("SPOOL_BINARY")
    source = Path(given) if given else REPO / ".build" / "debug" / "spool"
    if not source.is_file():
        pytest.skip(f"no spool binary at {source} (build it, or set SPOOL_BINARY)")
    root = Path(tempfile.mkdtemp(prefix="fastapi-render-test-"))
    binary = root / "spool"
    shutil.copy2(source, binary)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_")}
    out = root / "stdout.txt"
    with open(out, "wb") as stdout, open(root / "stderr.txt", "wb") as stderr:
        process = subprocess.Popen(
            [str(binary), "serve", "--port", "0", "--data-dir", str(root / "data"), "--gpus", "none",
             "--kill-grace", "1", "--log-level", "warning"],
            stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env,
        )
    try:
        url = ""
        deadline = time.monotonic() + 20
        while not url and time.monotonic() < deadline and process.poll() is None:
            for line in out.read_text(errors="replace").splitlines():
                if line.startswith("spool: listening on "):
                    url = line.split("listening on ", 1)[1].strip()
            time.sleep(0.02)
        assert url, f"spool serve did not start: {(root / 'stderr.txt').read_text(errors='replace')[-2000:]}"
        yield url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def app_url(spool_url: str) -> Iterator[str]:
    """The app under uvicorn, on a socket bound here (a free port), in a thread of this process."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(spool_url), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture
def http(app_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=app_url, timeout=10) as client:
        yield client


def timed_post(http: httpx.Client, path: str, body: Dict[str, Any]) -> Tuple[httpx.Response, float]:
    started = time.monotonic()
    response = http.post(path, json=body)
    return response, time.monotonic() - started


def follow(http: httpx.Client, path: str, headers: Dict[str, str] = {}) -> Tuple[httpx.Response, List[Any]]:
    """Read the app's event stream to its end (after the render's final state and outputs)."""
    parser = SSEParser()
    events: List[Any] = []
    with http.stream("GET", path, headers=headers, timeout=httpx.Timeout(10, read=40)) as response:
        for chunk in response.iter_bytes():
            events += parser.feed(chunk)
    return response, events + parser.close()


def png_size(data: bytes) -> Tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_submit_answers_at_once_and_spool_runs_it(http: httpx.Client) -> None:
    # A long render takes the one slot; the app answers 201 at once and stays responsive.
    big, seconds = timed_post(http, "/renders", BIG)
    assert big.status_code == 201, big.text
    assert seconds < 2.0, f"the submit took {seconds:.2f} s"
    big_id = big.json()["id"]
    deadline = time.monotonic() + 20
    while http.get(f"/renders/{big_id}", params={"wait": 1}).json()["state"] == "queued":
        assert time.monotonic() < deadline, "the long render never started"

    # While it renders, the app still answers at once: nothing runs in its event loop.
    started = time.monotonic()
    assert http.get("/").status_code == 200
    running = http.get(f"/renders/{big_id}").json()
    assert running["state"] == "running" and time.monotonic() - started < 1.0

    small, seconds = timed_post(http, "/renders", SMALL)
    assert small.status_code == 201 and seconds < 2.0, (small.status_code, seconds)
    render = small.json()
    assert render["state"] == "queued" and render["position"] == 1
    assert small.headers["location"] == f"/renders/{render['id']}" == render["links"]["self"]
    assert "image" not in render["links"]
    assert http.get(f"/renders/{render['id']}/image").status_code == 409  # not rendered yet

    stopping = http.post(f"/renders/{big_id}/cancel")
    assert stopping.status_code == 200 and stopping.json()["state"] in ("running", "canceled")

    # Follow the small render through the app's event stream (Spool's, passed through).
    response, events = follow(http, render["links"]["events"])
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    states = [e.data["state"] for e in events if e.event == "state"]
    assert states[0] == "queued" and states[-2:] == ["running", "succeeded"], states
    assert any(e.event == "progress" for e in events)
    assert events[-1].event == "outputs" and [o["name"] for o in events[-1].data["outputs"]] == ["render.png"]
    assert all(e.data["job"] == render["id"] for e in events)

    done = http.get(f"/renders/{render['id']}").json()
    assert done["state"] == "succeeded" and done["progress"]["fraction"] == 1
    image = http.get(done["links"]["image"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert png_size(image.content) == (SMALL["width"], SMALL["height"])

    # A browser reconnecting after the last event is told to stop (204); one that missed the end gets the rest.
    after_end, rest = follow(http, render["links"]["events"], {"Last-Event-ID": str(events[-1].id)})
    assert after_end.status_code == 204 and rest == []
    _, rest = follow(http, render["links"]["events"], {"Last-Event-ID": str(events[-3].id)})
    assert [e.id for e in rest] == [e.id for e in events[-2:]]

    assert http.get(f"/renders/{big_id}", params={"wait": 10}).json()["state"] == "canceled"


def test_errors_come_through(http: httpx.Client) -> None:
    unknown = "job_" + "0" * 26
    for path in (f"/renders/{unknown}", f"/renders/{unknown}/events", f"/renders/{unknown}/image"):
        response = http.get(path)
        assert response.status_code == 404 and unknown in response.json()["detail"], (path, response.text)
    assert http.post(f"/renders/{unknown}/cancel").status_code == 404
    assert http.post("/renders", json={"width": 0, "height": 24}).status_code == 422  # checked here

    render = http.post("/renders", json=SMALL).json()
    assert http.get(f"/renders/{render['id']}", params={"wait": 30}).json()["state"] in ("running", "succeeded")
    deadline = time.monotonic() + 30
    while http.get(f"/renders/{render['id']}", params={"wait": 5}).json()["state"] != "succeeded":
        assert time.monotonic() < deadline
    again = http.post(f"/renders/{render['id']}/cancel")
    assert again.status_code == 409  # Spool's "already finished"


def test_idempotent_submit(http: httpx.Client) -> None:
    key = {"Idempotency-Key": "fastapi-render-test-1"}
    first = http.post("/renders", json=SMALL, headers=key)
    second = http.post("/renders", json=SMALL, headers=key)
    assert first.status_code == 201 and second.status_code == 201
    assert first.json()["id"] == second.json()["id"]  # one render, not two


def test_page(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "new EventSource(" in page.text and 'fetch("/renders"' in page.text


def test_many_followers_leave_the_app_answering(app_url: str, spool_url: str) -> None:
    """More browsers following renders than httpx's default pool (100 connections) holds. Found
    by attacking the build: each follower holds one of the app's connections to Spool, and with
    100 of them every other request of the app (a submit, a status) waited for one that never
    came free."""
    import asyncio

    followers = 101

    async def scenario() -> None:
        async with httpx.AsyncClient(base_url=spool_url, timeout=10) as spool:
            # Renders that wait (the app's API has no delay): each stream stays open.
            ids = [(await spool.post("/v1/jobs", json={"type": "render", "input": SMALL, "delay_s": 600})).json()["id"]
                   for _ in range(followers)]
            try:
                limits = httpx.Limits(max_connections=followers + 10)
                async with httpx.AsyncClient(base_url=app_url, timeout=10, limits=limits) as web:
                    streams: List[httpx.Response] = []
                    readers: List[Any] = []  # kept: a reader collected as garbage closes its stream
                    try:
                        for render_id in ids:
                            response = await web.send(web.build_request("GET", f"/renders/{render_id}/events"), stream=True)
                            streams.append(response)
                            assert response.status_code == 200
                            chunks = response.aiter_bytes()
                            readers.append(chunks)
                            seen = b""
                            while b"event: state" not in seen:  # Spool's stream for it is open
                                seen += await chunks.__anext__()
                        started = time.monotonic()
                        submitted = await web.post("/renders", json=SMALL)
                        assert submitted.status_code == 201, submitted.text
                        assert time.monotonic() - started < 5
                        ids.append(submitted.json()["id"])
                        status = await web.get(f"/renders/{ids[0]}")
                        assert status.status_code == 200 and status.json()["state"] == "queued"
                    finally:
                        for response in streams:
                            await response.aclose()
            finally:
                for render_id in ids:
                    await spool.post(f"/v1/jobs/{render_id}/cancel")

    asyncio.run(scenario())
