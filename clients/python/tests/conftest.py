"""A fake Spool server for the kit's tests: real FIFOs, a real worker subprocess.

The test side opens both FIFOs O_RDWR, so no open ever blocks (a FIFO opened for reading and
writing has a reader and a writer at once), reads messages with select() and a deadline, and
kills every process it started.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

TESTS = Path(__file__).resolve().parent
KIT_SRC = TESTS.parent / "src"
WORKERS = TESTS / "workers"
REPO = TESTS.parents[2]
# Run the workers under another interpreter (e.g. python3.9) with SPOOL_TEST_PYTHON.
PYTHON = os.environ.get("SPOOL_TEST_PYTHON", sys.executable)

# The tests also import the kit in-process (unit tests), installed or not.
if str(KIT_SRC) not in sys.path:
    sys.path.insert(0, str(KIT_SRC))

MAX_LINE = 4096


def worker_env(extra: Dict[str, str]) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPOOL_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(KIT_SRC), env.get("PYTHONPATH", "")] if p)
    env.pop("PYTHONUNBUFFERED", None)  # the kit must flush by itself
    env.update(extra)
    return env


class FakeServer:
    """Plays the server for one worker process."""

    def __init__(self, root: Path, script: Path, heartbeat_s: float = 5.0, env: Optional[Dict[str, str]] = None):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.messages_path = root / "messages.fifo"
        self.commands_path = root / "commands.fifo"
        os.mkfifo(self.messages_path)
        os.mkfifo(self.commands_path)
        self.msg_fd = os.open(self.messages_path, os.O_RDWR | os.O_NONBLOCK)
        self.cmd_fd: Optional[int] = os.open(self.commands_path, os.O_RDWR)
        self.stdout_path = root / "stdout.log"
        self.stderr_path = root / "stderr.log"
        self._buf = b""
        self.received: List[Dict[str, Any]] = []  # every message, heartbeats included
        self.arrivals: List[float] = []
        extra = {
            "SPOOL_MODE": "worker",
            "SPOOL_PROTOCOL": "2",
            "SPOOL_MESSAGES": str(self.messages_path),
            "SPOOL_COMMANDS": str(self.commands_path),
            "SPOOL_HEARTBEAT_S": str(heartbeat_s),
            "SPOOL_WORKER_ID": "w-test",
            "SPOOL_SLOT": "0",
        }
        extra.update(env or {})
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [PYTHON, str(script)],
                env=worker_env(extra),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=str(root),
                start_new_session=True,  # its own process group, killed as a whole
            )

    # -- server → worker

    def send(self, command: Any) -> None:
        assert self.cmd_fd is not None
        data = command if isinstance(command, bytes) else json.dumps(command).encode() + b"\n"
        os.write(self.cmd_fd, data)

    def job(self, job_input: Any, *, job_id: Optional[str] = None, inline: bool = True, attempt: int = 1,
            extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Send a job command; returns {"job", "output_dir", "input_file"}."""
        job_id = job_id or "job_" + uuid.uuid4().hex[:26]
        job_dir = self.root / "jobs" / job_id
        output_dir = job_dir / "outputs"
        output_dir.mkdir(parents=True)
        input_file = job_dir / "input.json"
        input_file.write_text(json.dumps(job_input))
        command: Dict[str, Any] = {
            "type": "job",
            "job": job_id,
            "input_file": str(input_file),
            "output_dir": str(output_dir),
            "attempt": attempt,
            "timeout_s": 600,
        }
        if inline:
            command["input"] = job_input
        command.update(extra or {})
        self.send(command)
        return {"job": job_id, "output_dir": output_dir, "input_file": input_file}

    def close_commands(self) -> None:
        """EOF on SPOOL_COMMANDS (the test side held the only write end)."""
        if self.cmd_fd is not None:
            os.close(self.cmd_fd)
            self.cmd_fd = None

    # -- worker → server

    def next_message(self, timeout: float = 10.0) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no message within {timeout} s; {self.describe()}")
            ready, _, _ = select.select([self.msg_fd], [], [], min(remaining, 0.25))
            if ready:
                try:
                    chunk = os.read(self.msg_fd, 65536)
                except BlockingIOError:
                    continue
                self._buf += chunk
            elif self.proc.poll() is not None and b"\n" not in self._buf:
                # Drain anything written just before it exited, then give up.
                ready, _, _ = select.select([self.msg_fd], [], [], 0.1)
                if not ready:
                    raise AssertionError(f"the worker exited with {self.proc.returncode}; {self.describe()}")
        line, self._buf = self._buf.split(b"\n", 1)
        assert len(line) + 1 <= MAX_LINE, f"a message line of {len(line) + 1} bytes"
        msg = json.loads(line.decode("utf-8"))  # strict UTF-8 and JSON
        assert isinstance(msg, dict) and isinstance(msg.get("type"), str), msg
        self.received.append(msg)
        self.arrivals.append(time.monotonic())
        return msg

    def until(self, predicate: Callable[[Dict[str, Any]], bool], timeout: float = 10.0) -> List[Dict[str, Any]]:
        """Messages (heartbeats left out) up to and including the first that matches."""
        deadline = time.monotonic() + timeout
        seen: List[Dict[str, Any]] = []
        while True:
            msg = self.next_message(max(0.01, deadline - time.monotonic()))
            if msg["type"] != "heartbeat":
                seen.append(msg)
            if predicate(msg):
                return seen

    def until_type(self, kind: str, timeout: float = 10.0) -> List[Dict[str, Any]]:
        return self.until(lambda m: m["type"] == kind, timeout)

    def until_done(self, job_id: str, timeout: float = 10.0) -> List[Dict[str, Any]]:
        return self.until(lambda m: m["type"] in ("succeeded", "failed") and m.get("job") == job_id, timeout)

    def no_message(self, seconds: float, ignore_heartbeats: bool = True) -> None:
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                msg = self.next_message(remaining)
            except AssertionError:
                return
            if not (ignore_heartbeats and msg["type"] == "heartbeat"):
                raise AssertionError(f"unexpected message {msg}")

    # -- the process

    def wait_exit(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not exit within {timeout} s; {self.describe()}") from None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return f"returncode={self.proc.poll()}\n--- stderr ---\n{self.stderr()[-4000:]}"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - should not happen after SIGKILL
            self.proc.kill()
        for fd in (self.msg_fd, self.cmd_fd):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.cmd_fd = None


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Callable[..., FakeServer]]:
    """start_worker(script=..., heartbeat_s=..., env=...) → a FakeServer; all are killed at the end."""
    servers: List[FakeServer] = []

    def start(script: Path = WORKERS / "kit_worker.py", heartbeat_s: float = 5.0, env: Optional[Dict[str, str]] = None) -> FakeServer:
        server = FakeServer(tmp_path / f"worker{len(servers)}", Path(script), heartbeat_s, env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def run_script(args: List[str], env: Dict[str, str], timeout: float = 30.0, stdin: bytes = b"", cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
    """Run a script to completion (process mode, dry runs); killed at the timeout."""
    return subprocess.run(
        [PYTHON] + args,
        env=worker_env(env),
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=str(cwd) if cwd else None,
        start_new_session=True,
    )
