"""Fixtures: real Spool servers over loopback, the sync and async clients, and a time limit per test.

The server binary is `$SPOOL_BINARY`, else the repository's `.build/debug/spool` (copied to a
temporary folder first, since that path is rebuilt while we run). Servers are started with
`--port 0` (or a port picked here, so a restart can reuse it), stopped by PID — SIGTERM, then
SIGKILL — and their data folders removed. Tests that need a server are skipped without a binary.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional

import pytest

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src"
REPO = TESTS.parents[3]  # clients/python/spool-client/tests -> the repository root
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

import spool_client  # noqa: E402

#: No test may run longer than this (seconds); a SIGALRM fails it.
TEST_LIMIT_S = 20

JOB_TYPES: Dict[str, Any] = {
    "sleep": {
        "command": ["sleep", "{input.seconds}"],
        "timeout_s": 60,
        "input_schema": {
            "type": "object",
            "required": ["seconds"],
            "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": 600}},
        },
    },
    "noop": {"command": ["/bin/true"]},
    "pager": {"command": ["/bin/true"]},
    "files": {"command": ["/bin/sh", "-c", 'head -c {input.bytes} /dev/urandom > "$SPOOL_OUTPUT_DIR/blob.bin"']},
    # `n` empty output files (a job with more than the server lists).
    "many": {"command": ["/bin/sh", "-c", 'cd "$SPOOL_OUTPUT_DIR" && seq 1 {input.n} | xargs touch']},
    # Writes `lines` log lines, one every `delay` seconds.
    "chatty": {
        "command": ["/bin/sh", "-c", "i=0; while [ $i -lt {input.lines} ]; do i=$((i+1)); echo \"line $i\"; sleep {input.delay}; done"],
    },
    # Nine progress reports and log lines, one every `delay` seconds. Two attempts: a server killed
    # mid-run (SIGKILL) requeues it on restart instead of failing it as interrupted.
    "ticker": {
        "max_attempts": 2,
        "command": [
            "/bin/sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9; do "
            "printf '{\"type\":\"progress\",\"fraction\":0.%s,\"message\":\"step %s\"}\\n' $i $i > \"$SPOOL_MESSAGES\"; "
            "echo \"tick $i\"; sleep {input.delay}; done",
        ],
    },
    # Fails (exit 3) until its attempt number ($SPOOL_ATTEMPT, from 1) reaches `succeed_on`;
    # the type's retry policy gives it three attempts, 0.2 s back-off doubling up to 0.5 s.
    "flaky": {
        "command": ["/bin/sh", "-c", 'echo "attempt $SPOOL_ATTEMPT"; [ "$SPOOL_ATTEMPT" -ge {input.succeed_on} ] || exit 3'],
        "retry": {"max_attempts": 3, "backoff_s": 0.2, "max_backoff_s": 0.5},
        "input_schema": {
            "type": "object",
            "required": ["succeed_on"],
            "properties": {"succeed_on": {"type": "integer", "minimum": 1, "maximum": 100}},
        },
    },
    # A task of a job array: writes "$SPOOL_ARRAY_INDEX $SPOOL_ARRAY_ID" to the output frame-{input.item}.txt.
    "frame": {"command": ["/bin/sh", "-c", 'printf "%s %s" "$SPOOL_ARRAY_INDEX" "$SPOOL_ARRAY_ID" > "$SPOOL_OUTPUT_DIR/frame-{input.item}.txt"']},
    # Fails (exit 4) at once when its item is `bad`, else succeeds after 0.2 s: array tasks that fail.
    "shard": {"command": ["/bin/sh", "-c", '[ "{input.item}" != "{input.bad}" ] || exit 4; sleep 0.2']},
    # Result reuse by default: a repeat of a job that succeeded within the hour gets that job.
    "cached": {"command": ["/bin/true"], "dedup": {"succeeded_within_s": 3600}},
}


def server_config() -> Dict[str, Any]:
    return {"kill_grace_s": 1, "shutdown_grace_s": 1, "job_types": JOB_TYPES}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SpoolServer:
    """One `spool serve` process on a data folder; `restart()` keeps the folder and the port."""

    def __init__(self, binary: Path, root: Path, config: Dict[str, Any], port: int = 0) -> None:
        self.binary = binary
        self.root = root
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = root / "spool.json"
        self.config_path.write_text(json.dumps(config))
        self.port = port
        self.url = ""
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.starts = 0
        #: Tokens made for this server, by name.
        self.tokens: Dict[str, str] = {}

    def start(self, timeout: float = 15.0) -> "SpoolServer":
        assert self.process is None, "already running"
        self.starts += 1
        out = self.root / f"stdout-{self.starts}.txt"
        err = self.root / f"stderr-{self.starts}.txt"
        args = [
            str(self.binary), "serve", "--port", str(self.port), "--data-dir", str(self.data_dir),
            "--gpus", "none", "--log-level", "warning", "--config", str(self.config_path),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_")}
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            self.process = subprocess.Popen(args, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = out.read_text(errors="replace")
            for line in text.splitlines():
                if "listening on " in line:
                    self.url = line.split("listening on ", 1)[1].strip()
                    self.port = int(self.url.rsplit(":", 1)[1])
                    return self
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        code = self.process.poll()
        self.stop()
        raise RuntimeError(f"spool serve did not start (exit {code}): {err.read_text(errors='replace')[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM, grace: float = 10.0) -> Optional[int]:
        """Signal the server by PID, SIGKILL it after `grace` seconds; returns its exit status."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            try:
                process.send_signal(sig)
                return process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
        return process.wait(timeout=10)

    def restart(self) -> "SpoolServer":
        self.stop()
        return self.start()

    def stderr(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("stderr-*.txt")))


# --- the binary and the servers ------------------------------------------------------------


@pytest.fixture(scope="session")
def spool_binary() -> Iterator[Path]:
    given = os.environ.get("SPOOL_BINARY")
    source = Path(given) if given else REPO / ".build" / "debug" / "spool"
    if not source.is_file():
        pytest.skip(f"no spool binary at {source} (build it, or set SPOOL_BINARY)")
    if given:
        yield source
        return
    folder = Path(tempfile.mkdtemp(prefix="spool-client-bin-"))
    try:
        copy = folder / "spool"
        shutil.copy2(source, copy)  # the build tree's binary may be rebuilt while the tests run
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def create_token(binary: Path, data_dir: Path, name: str, *options: str) -> str:
    """`spool token create` on a data folder (the server need not run); the token, its last line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_")}
    done = subprocess.run(
        [str(binary), "token", "create", "--data-dir", str(data_dir), "--name", name, *options],
        capture_output=True, text=True, timeout=30, env=env, stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"spool token create --name {name} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip().splitlines()[-1].strip()


@pytest.fixture
def spawn_server(spool_binary: Path) -> Iterator[Callable[..., SpoolServer]]:
    """Start servers of their own for one test (stopped and removed after it). `tokens` maps a
    token's name to `spool token create` options; the tokens are made before the server starts
    and kept in `server.tokens`."""
    servers: List[SpoolServer] = []

    def spawn(config: Optional[Dict[str, Any]] = None, port: int = 0, tokens: Optional[Dict[str, List[str]]] = None) -> SpoolServer:
        root = Path(tempfile.mkdtemp(prefix="spool-client-test-"))
        server = SpoolServer(spool_binary, root, config or server_config(), port)
        servers.append(server)
        for name, options in (tokens or {}).items():
            server.tokens[name] = create_token(spool_binary, server.data_dir, name, *options)
        return server.start()

    yield spawn
    for server in servers:
        server.stop(grace=5)  # SIGTERM stops its jobs too; SIGKILL after 5 s
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def server(spool_binary: Path) -> Iterator[SpoolServer]:
    """The server most tests share (one slot: a test must leave no job running)."""
    root = Path(tempfile.mkdtemp(prefix="spool-client-test-"))
    instance = SpoolServer(spool_binary, root, server_config())
    try:
        yield instance.start()
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)


# --- clients -------------------------------------------------------------------------------


class AsyncAsSync:
    """Drives an `AsyncClient` from synchronous test code on a private event loop, so each
    test body below runs against both clients (coroutines are awaited, async iterators
    iterated)."""

    def __init__(self, client: spool_client.AsyncClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            if inspect.isawaitable(result):
                return self._loop.run_until_complete(asyncio.wait_for(result, TEST_LIMIT_S))
            if hasattr(result, "__anext__"):
                return self._iterate(result)
            return result

        return call

    def _iterate(self, iterator: AsyncIterator[Any]) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self._loop.run_until_complete(asyncio.wait_for(iterator.__anext__(), TEST_LIMIT_S))
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                self._loop.run_until_complete(aclose())


@pytest.fixture(params=["sync", "async"])
def make_api(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """A factory of clients of the parametrized kind: `make_api(url, **options)`."""
    made: List[Any] = []
    loop = asyncio.new_event_loop() if request.param == "async" else None

    def make(url: str, sleep: Optional[Callable[[float], None]] = None, **options: Any) -> Any:
        """`sleep` replaces the client's wait between retries (tests record it instead)."""
        if loop is None:
            client: Any = spool_client.Client(url, **options)
            if sleep is not None:
                client._sleep = sleep
            made.append(client)
            return client
        native = spool_client.AsyncClient(url, **options)
        if sleep is not None:
            record = sleep

            async def recorded(seconds: float) -> None:
                record(seconds)

            native._sleep = recorded
        made.append(native)
        return AsyncAsSync(native, loop)

    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for client in made:
        if loop is None:
            client.close()
        else:
            loop.run_until_complete(client.aclose())
    if loop is not None:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def cancel_unfinished(client: spool_client.Client) -> None:
    """Leave the shared server's slot free: cancel what a test left queued or running."""
    left = [job for state in ("queued", "running") for job in client.list(state=state)]
    for job in left:
        try:
            client.cancel(job.id)
        except spool_client.Conflict:
            pass
    for job in left:
        client.wait(job.id, timeout=10)


@pytest.fixture
def spool(server: SpoolServer) -> Iterator[spool_client.Client]:
    """A plain sync client of the shared server (for set-up and checks); tidies the queue after."""
    with spool_client.Client(server.url) as client:
        yield client
        cancel_unfinished(client)


@pytest.fixture
def api(make_api: Callable[..., Any], spool: spool_client.Client, server: SpoolServer) -> Any:
    """A client (sync, or async driven synchronously) of the shared server."""
    return make_api(server.url)


# --- a time limit per test -----------------------------------------------------------------


class TestTookTooLong(Exception):
    pass


@pytest.fixture(autouse=True)
def time_limit() -> Iterator[None]:
    """Fail a test that runs past TEST_LIMIT_S (no plugin: SIGALRM in the main thread)."""

    def expired(signum: int, frame: Any) -> None:
        raise TestTookTooLong(f"the test ran past {TEST_LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, TEST_LIMIT_S)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_async(coroutine: Any, limit: float = TEST_LIMIT_S - 2) -> Any:
    """Run a native async test body with a time limit."""
    return asyncio.run(asyncio.wait_for(coroutine, limit))


# --- a server with tokens ------------------------------------------------------------------

#: The tokens of `auth_server`: two tenants, an administrator, and a tenant limited to one submit a second.
AUTH_WEBHOOK_SECRET = "client-tests-webhook-secret"
AUTH_TOKENS: Dict[str, List[str]] = {"admin": ["--admin"], "alice": [], "bob": [], "limited": ["--rate", "1"]}


@pytest.fixture(scope="session")
def auth_server(spool_binary: Path) -> Iterator[SpoolServer]:
    """A server that requires tokens (they exist before it starts: `auth: auto`), shared by the
    token tests; `auth_server.tokens[name]`."""
    root = Path(tempfile.mkdtemp(prefix="spool-client-auth-"))
    # Signed webhooks, to a receiver on this machine (test_auth's webhook test).
    config = dict(server_config(), webhook_secret=AUTH_WEBHOOK_SECRET, webhook_allow_private=True)
    instance = SpoolServer(spool_binary, root, config)
    try:
        for name, options in AUTH_TOKENS.items():
            instance.tokens[name] = create_token(spool_binary, instance.data_dir, name, *options)
        yield instance.start()
    finally:
        if instance.process is not None and instance.tokens:
            with spool_client.Client(instance.url, token=instance.tokens["admin"]) as admin:
                try:
                    cancel_unfinished(admin)
                except spool_client.SpoolError:
                    pass
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)
