"""The Spool worker kit: protocol v2 (warm workers), v1 (one process per job) and a dry run.

See docs/worker-protocol.md in the Spool repository for the wire format. Everything here is
standard library only and works on Python 3.9+.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from typing import Any, Callable, Dict, List, Mapping, NoReturn, Optional, Set, Union

__version__ = "0.2.0"

#: The protocol version this kit speaks in worker mode.
PROTOCOL_VERSION = 2

#: The largest message line (JSON plus the trailing newline), in bytes. Lines this size or
#: smaller are written with one ``write`` to the FIFO and so are atomic (PIPE_BUF is 4096).
MAX_MESSAGE_BYTES = 4096

_TRUNCATED = "…[truncated]"

#: ``setup()`` takes no arguments; what it returns is handed to every job as ``ctx.state``.
SetupFunction = Callable[[], Any]
#: ``run(input, ctx)`` returns a JSON-serialisable result or ``None``.
RunFunction = Callable[[Any, "Context"], Any]
#: Extra fields for the ``ready`` message's ``info``: a dict, or a function of the state.
InfoSource = Union[Mapping[str, Any], Callable[[Any], Mapping[str, Any]], None]


class Canceled(BaseException):
    """Raised by :meth:`Context.progress` and :meth:`Context.check_canceled` once the server
    asked to cancel the job (or to shut the worker down) — and in process mode wherever the job
    is when SIGTERM comes (the server's cancel, timeout or shutdown there).

    It derives from ``BaseException`` (like ``asyncio.CancelledError``) so that a broad
    ``except Exception:`` in user code does not swallow it. Let it propagate; the kit answers
    the server with ``failed``.
    """


class _MessageTooLarge(ValueError):
    pass


# --------------------------------------------------------------------------------------------
# Encoding


def _json_default(obj: Any) -> Any:
    """Convert NumPy/PyTorch scalars and arrays (duck-typed), sets and paths to JSON."""
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _dumps(obj: Any) -> bytes:
    text = json.dumps(
        obj,
        ensure_ascii=False,
        separators=(",", ":"),
        allow_nan=False,  # NaN/Infinity are not JSON; the server would drop the whole line
        default=_json_default,
    )
    return text.encode("utf-8", "replace")  # lone surrogates become "?"


def _encode_line(msg: Dict[str, Any], truncate: Optional[str] = None) -> bytes:
    """One message as one line of at most MAX_MESSAGE_BYTES bytes, newline included.

    If it is too long and ``truncate`` names a string field, that field is shortened (marked
    with "…[truncated]") until the line fits; otherwise ``_MessageTooLarge`` is raised.
    """
    data = _dumps(msg)
    if len(data) < MAX_MESSAGE_BYTES:
        return data + b"\n"
    value = msg.get(truncate) if truncate else None
    if isinstance(value, str):
        # A prefix longer than the limit in characters can never fit (each is >= 1 byte).
        text = value[:MAX_MESSAGE_BYTES]

        def attempt(keep: int) -> Optional[bytes]:
            trial = dict(msg)
            trial[truncate] = text[:keep] + _TRUNCATED  # type: ignore[index]
            encoded = _dumps(trial)
            return encoded if len(encoded) < MAX_MESSAGE_BYTES else None

        best = attempt(0)
        if best is not None:
            lo, hi = 0, len(text)
            while lo < hi:  # the longest prefix that fits
                mid = (lo + hi + 1) // 2
                encoded = attempt(mid)
                if encoded is not None:
                    lo, best = mid, encoded
                else:
                    hi = mid - 1
            return best + b"\n"
    raise _MessageTooLarge(f"message of {len(data) + 1} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")


def _describe(exc: BaseException) -> str:
    """``ExceptionType: message`` (or just the type when there is no message)."""
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not break the worker
        text = ""
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _warn(text: str) -> None:
    try:
        sys.stderr.write(f"spool-worker: {text}\n")
        sys.stderr.flush()
    except Exception:
        pass


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


def _line_buffer_std() -> None:
    """stdout/stderr are the job's log; line buffering makes `spool logs --follow` timely."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(line_buffering=True)
            except Exception:
                pass


def _safe_relpath(name: Union[str, "os.PathLike[str]"]) -> str:
    """A relative path that stays inside the output folder."""
    text = os.fspath(name)
    if not isinstance(text, str):
        raise TypeError("output names must be str")
    if not text or os.path.isabs(text):
        raise ValueError(f"output name must be a relative path inside the output dir, not {text!r}")
    norm = os.path.normpath(text)
    if norm in (".", "..") or norm.startswith(".." + os.sep):
        raise ValueError(f"output name must stay inside the output dir, not {text!r}")
    return norm


# --------------------------------------------------------------------------------------------
# Where messages go


class _Sink:
    """Receives protocol messages."""

    def send(self, msg: Dict[str, Any], truncate: Optional[str] = None) -> None:
        raise NotImplementedError


class _FifoSink(_Sink):
    """SPOOL_MESSAGES: every message is one ``os.write`` of one line, under one lock."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()

    def send(self, msg: Dict[str, Any], truncate: Optional[str] = None) -> None:
        try:
            line = _encode_line(msg, truncate)
        except _MessageTooLarge as exc:
            _warn(f"dropped a {msg.get('type')!r} message: {exc}")
            return
        with self._lock:
            try:
                written = os.write(self._fd, line)
                # A blocking write of <= PIPE_BUF bytes to a FIFO is all-or-nothing; this loop
                # only guards against a platform that breaks that promise.
                while written < len(line):
                    written += os.write(self._fd, line[written:])
            except BrokenPipeError:
                _warn("the server closed SPOOL_MESSAGES; exiting")
                _flush_std()
                os._exit(1)


class _ConsoleSink(_Sink):
    """Dry runs (and process mode without SPOOL_MESSAGES): human-readable lines on stderr."""

    def send(self, msg: Dict[str, Any], truncate: Optional[str] = None) -> None:
        kind = msg.get("type")
        if kind == "progress":
            text = f"[{msg.get('fraction', 0.0) * 100:5.1f}%]"
            if msg.get("message"):
                text += f" {msg['message']}"
            if msg.get("preview"):
                text += f" (preview: {msg['preview']})"
        elif kind == "log":
            text = f"[log] {msg.get('line', '')}"
        else:
            text = json.dumps(msg, default=str)
        try:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except Exception:
            pass


# --------------------------------------------------------------------------------------------
# The job context


class Context:
    """What ``run(input, ctx)`` gets for one job."""

    def __init__(
        self,
        *,
        job_id: str,
        attempt: int,
        input_file: Optional[str],
        output_dir: str,
        state: Any,
        timeout_s: Optional[float],
        mode: str,
        sink: _Sink,
        name_job: bool,
        array_id: Optional[str] = None,
        array_index: Optional[int] = None,
    ) -> None:
        #: The job's id (``job_…``); ``"dry-run"`` in a dry run.
        self.job_id: str = job_id
        #: Which attempt this is (1 for the first).
        self.attempt: int = attempt
        #: The file holding the job's input as JSON (None if the server gave none).
        self.input_file: Optional[str] = input_file
        #: The job's output folder: every file written there is an output.
        self.output_dir: str = output_dir
        #: What ``setup()`` returned.
        self.state: Any = state
        #: The job's timeout in seconds, when the server says.
        self.timeout_s: Optional[float] = timeout_s
        #: ``"worker"``, ``"process"`` or ``"dry-run"``.
        self.mode: str = mode
        #: For a task of a job array: the array's id (``arr_…``) and the task's index; else None.
        #: (The task's item is also in its input, as ``input["item"]``.)
        self.array_id: Optional[str] = array_id
        self.array_index: Optional[int] = array_index
        self._sink = sink
        self._name_job = name_job  # v2 messages carry "job"; v1 progress lines do not
        self._canceled = threading.Event()
        self._outputs: List[str] = []
        self._closed = False  # set when the job has ended: later messages are dropped

    def __repr__(self) -> str:
        return f"<spool_worker.Context job={self.job_id!r} attempt={self.attempt} mode={self.mode!r}>"

    @property
    def canceled(self) -> bool:
        """True once the server asked to cancel this job (or to shut the worker down)."""
        return self._canceled.is_set()

    def check_canceled(self) -> None:
        """Raise :class:`Canceled` if the job was canceled; call it in long loops."""
        if self._canceled.is_set():
            raise Canceled(self.job_id)

    def progress(
        self,
        fraction: float,
        message: Optional[str] = None,
        preview: Optional[str] = None,
    ) -> None:
        """Report progress: ``fraction`` in 0..1 (clamped), an optional message, and optionally
        ``preview``, the name of a file in the output dir to show as a preview.

        Raises :class:`Canceled` if the job was canceled, so a loop that reports progress stops
        by itself.
        """
        self.check_canceled()
        try:
            value = float(fraction)
        except (TypeError, ValueError):
            raise TypeError(f"progress fraction must be a number, not {fraction!r}") from None
        if math.isnan(value):
            raise ValueError("progress fraction is NaN")
        msg: Dict[str, Any] = {"type": "progress"}
        if self._name_job:
            msg["job"] = self.job_id
        msg["fraction"] = min(1.0, max(0.0, value))
        if message is not None:
            msg["message"] = str(message)
        if preview is not None:
            msg["preview"] = _safe_relpath(preview)
        if not self._closed:
            self._sink.send(msg, truncate="message")

    def log(self, line: Any) -> None:
        """Append a line to the job's log (several lines if the text holds newlines)."""
        text = str(line)
        if self.mode == "process":
            # Protocol v1 has no log message; stderr is the job's log.
            try:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()
            except Exception:
                pass
            return
        for part in text.splitlines() or [""]:
            if self._closed:
                return
            msg: Dict[str, Any] = {"type": "log"}
            if self._name_job:
                msg["job"] = self.job_id
            msg["line"] = part
            self._sink.send(msg, truncate="line")

    def output_path(self, name: Union[str, "os.PathLike[str]"]) -> str:
        """The path of ``name`` inside the job's output dir; folders on the way are created.

        ``name`` must be relative and stay inside the output dir (no ``..`` escapes).
        """
        rel = _safe_relpath(name)
        path = os.path.join(self.output_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if rel not in self._outputs:
            self._outputs.append(rel)
        return path

    # -- used by the kit

    def _cancel(self) -> None:
        self._canceled.set()

    def _announce_outputs(self) -> None:
        """Send the informational ``output`` message for files named through output_path."""
        if not self._name_job:
            return
        for rel in self._outputs:
            if os.path.isfile(os.path.join(self.output_dir, rel)):
                self._sink.send({"type": "output", "job": self.job_id, "name": rel})


# --------------------------------------------------------------------------------------------
# Worker mode (protocol v2)

_STOP = object()


def _int_or(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _optional_int(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _env_int(text: Optional[str]) -> Optional[int]:
    text = (text or "").strip()
    return int(text) if text.lstrip("-").isdigit() else None


def _read_json_file(path: str) -> Any:
    with open(path, "rb") as f:
        data = f.read()
    return json.loads(data) if data.strip() else None


def _ready_info(info: InfoSource, state: Any, setup_s: float) -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "kit": f"spool-worker {__version__}",
        "python": platform.python_version(),
        "pid": os.getpid(),
        "setup_s": round(setup_s, 3),
    }
    try:
        extra = info(state) if callable(info) else info
        if extra:
            merged = dict(out)
            merged.update(dict(extra))
            _encode_line({"type": "ready", "info": merged})  # JSON, and small enough?
            out = merged
    except Exception as exc:  # ready must go out whatever the user's info is
        _warn(f"left the user's info out of the ready message: {_describe(exc)}")
    return out


class _Worker:
    def __init__(self, run: RunFunction, setup: Optional[SetupFunction], info: InfoSource) -> None:
        self._run = run
        self._setup = setup
        self._info = info
        self._jobs: "queue.Queue[Any]" = queue.Queue()
        self._lock = threading.Lock()  # guards _current and _canceled_ids
        self._current: Optional[Context] = None
        self._canceled_ids: Set[str] = set()
        self._stopping = threading.Event()
        self._sink: _FifoSink

    # The whole life of a worker; returns the exit status.
    def serve(self) -> int:
        env = os.environ
        messages = env.get("SPOOL_MESSAGES")
        commands = env.get("SPOOL_COMMANDS")
        if not messages or not commands:
            _warn("SPOOL_MODE=worker needs SPOOL_MESSAGES and SPOOL_COMMANDS")
            return 2
        protocol = env.get("SPOOL_PROTOCOL", str(PROTOCOL_VERSION))
        try:
            if int(protocol) < 2:
                _warn(f"the server speaks protocol {protocol}; worker mode needs 2")
                return 2
        except ValueError:
            _warn(f"ignoring unreadable SPOOL_PROTOCOL={protocol!r}")
        try:
            heartbeat_s = float(env.get("SPOOL_HEARTBEAT_S") or 5)
            if not heartbeat_s > 0 or math.isinf(heartbeat_s):
                raise ValueError
        except ValueError:
            _warn(f"bad SPOOL_HEARTBEAT_S={env.get('SPOOL_HEARTBEAT_S')!r}; using 5")
            heartbeat_s = 5.0

        _line_buffer_std()
        # The server holds both FIFOs open, so neither open blocks.
        self._sink = _FifoSink(os.open(messages, os.O_WRONLY))
        commands_fd = os.open(commands, os.O_RDONLY)

        # Heartbeats start before setup: loading a model can take longer than 3 intervals.
        threading.Thread(
            target=self._heartbeats, args=(heartbeat_s,), name="spool-heartbeat", daemon=True
        ).start()
        threading.Thread(
            target=self._read_commands, args=(commands_fd,), name="spool-commands", daemon=True
        ).start()

        started = time.monotonic()
        try:
            state = self._setup() if self._setup is not None else None
        except Exception:
            _warn("setup() failed; the worker exits without becoming ready")
            traceback.print_exc()
            _flush_std()
            return 1
        if self._stopping.is_set():
            return 0
        self._sink.send({"type": "ready", "info": _ready_info(self._info, state, time.monotonic() - started)})
        _flush_std()

        while True:
            command = self._jobs.get()
            if command is _STOP or self._stopping.is_set():
                return 0
            self._run_job(command, state)
            if self._stopping.is_set():
                return 0

    def _heartbeats(self, interval: float) -> None:
        deadline = time.monotonic()
        while True:
            deadline += interval
            delay = deadline - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                deadline = time.monotonic()  # fell behind (a blocked write): do not burst
            self._sink.send({"type": "heartbeat"})

    def _read_commands(self, fd: int) -> None:
        # A small line buffer over os.read (not a BufferedReader: a daemon thread blocked
        # inside one can abort interpreter shutdown with "could not acquire lock").
        buf = bytearray()
        searched = 0
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    end = buf.find(b"\n", searched)
                    if end < 0:
                        searched = len(buf)
                        break
                    line = bytes(buf[:end])
                    del buf[: end + 1]
                    searched = 0
                    self._dispatch(line)
            if buf.strip():
                self._dispatch(bytes(buf))
        except OSError as exc:
            _warn(f"reading SPOOL_COMMANDS failed: {exc}")
        except Exception:  # a bug here must not leave the worker deaf but alive
            _warn("the command reader failed:")
            traceback.print_exc()
        self._stop()

    def _dispatch(self, line: bytes) -> None:
        line = line.strip()
        if not line:
            return
        try:
            command = json.loads(line)
        except ValueError:
            _warn(f"ignored a malformed command line: {line[:200]!r}")
            return
        if not isinstance(command, dict):
            _warn(f"ignored a command that is not an object: {line[:200]!r}")
            return
        kind = command.get("type")
        if kind == "job":
            self._jobs.put(command)
        elif kind == "cancel":
            job = command.get("job")
            with self._lock:
                if self._current is not None and self._current.job_id == job:
                    self._current._cancel()
                elif isinstance(job, str):
                    if len(self._canceled_ids) > 1000:  # cancels for jobs long gone
                        self._canceled_ids.clear()
                    self._canceled_ids.add(job)
        elif kind == "shutdown":
            self._stop()
        # any other type: ignored (forward compatibility)

    def _stop(self) -> None:
        """shutdown or EOF: take no more jobs, stop the running one cooperatively, exit 0."""
        self._stopping.set()
        with self._lock:
            if self._current is not None:
                self._current._cancel()
        self._jobs.put(_STOP)

    def _run_job(self, command: Dict[str, Any], state: Any) -> None:
        job_id = command.get("job")
        if not isinstance(job_id, str) or not job_id:
            _warn(f"ignored a job command without a job id: {str(command)[:200]}")
            return
        output_dir = command.get("output_dir")
        input_file = command.get("input_file")
        timeout = command.get("timeout_s")
        ctx = Context(
            job_id=job_id,
            attempt=_int_or(command.get("attempt"), 1),
            input_file=input_file if isinstance(input_file, str) else None,
            output_dir=output_dir if isinstance(output_dir, str) else "",
            state=state,
            timeout_s=float(timeout) if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) else None,
            mode="worker",
            sink=self._sink,
            name_job=True,
            array_id=command.get("array_id") if isinstance(command.get("array_id"), str) else None,
            array_index=_optional_int(command.get("array_index")),
        )
        with self._lock:
            if job_id in self._canceled_ids:  # canceled before it started
                self._canceled_ids.discard(job_id)
                ctx._cancel()
            self._current = ctx

        error: Optional[str] = None
        done: Optional[Dict[str, Any]] = None
        _flush_std()
        try:
            ctx.check_canceled()
            if not ctx.output_dir:
                raise ValueError("the job command has no output_dir")
            if "input" in command:
                job_input = command["input"]
            elif ctx.input_file:
                job_input = _read_json_file(ctx.input_file)
            else:
                job_input = None
            result = self._run(job_input, ctx)
            ctx.check_canceled()  # canceled but returned anyway: still answer failed
            done = self._succeeded(ctx, result)
        except Canceled:
            error = "canceled"
        except Exception as exc:
            traceback.print_exc()
            error = _describe(exc)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: answer, then go
            traceback.print_exc()
            _flush_std()
            with self._lock:
                self._current = None
            self._sink.send({"type": "failed", "job": job_id, "error": _describe(exc)}, truncate="error")
            raise
        finally:
            _flush_std()  # the job's prints land in its log, not the next job's

        with self._lock:
            self._current = None
        ctx._closed = True  # a thread run() left behind cannot report for a finished job
        if self._stopping.is_set() and ctx.canceled:
            # Stopped by shutdown/EOF: no answer; the server decides (requeue) as for any
            # worker that exits with a job in flight.
            return
        try:
            ctx._announce_outputs()
        except Exception as exc:  # informational only
            _warn(f"could not announce outputs: {_describe(exc)}")
        if done is not None:
            self._sink.send(done)
        else:
            self._sink.send({"type": "failed", "job": job_id, "error": error or "failed"}, truncate="error")

    def _succeeded(self, ctx: Context, result: Any) -> Dict[str, Any]:
        """The ``succeeded`` message; a result too big for one line goes to a file instead."""
        msg: Dict[str, Any] = {"type": "succeeded", "job": ctx.job_id}
        if result is None:
            return msg
        msg["result"] = result
        try:
            _encode_line(msg)
            return msg
        except _MessageTooLarge:
            pass
        except (TypeError, ValueError) as exc:
            raise TypeError(f"run() returned a result that is not JSON: {exc}") from None
        name = "result.json"
        if os.path.exists(os.path.join(ctx.output_dir, name)):
            name = "spool-result.json"
        data = _dumps(result)
        with open(ctx.output_path(name), "wb") as f:
            f.write(data + b"\n")
        _warn(f"the result ({len(data)} bytes) is too big for a message; it is in the output {name}")
        msg["result"] = {"result_file": name, "result_bytes": len(data), "truncated": True}
        return msg


# --------------------------------------------------------------------------------------------
# Process mode (protocol v1)


def _serve_process(run: RunFunction, setup: Optional[SetupFunction]) -> int:
    env = os.environ
    _line_buffer_std()
    output_dir = env.get("SPOOL_OUTPUT_DIR")
    if not output_dir:
        _warn("process mode needs SPOOL_OUTPUT_DIR")
        return 1
    messages = env.get("SPOOL_MESSAGES")
    sink: _Sink = _FifoSink(os.open(messages, os.O_WRONLY)) if messages else _ConsoleSink()
    input_file = env.get("SPOOL_INPUT_FILE") or None
    attempt = env.get("SPOOL_ATTEMPT", "1").strip()
    ctx = Context(
        job_id=env.get("SPOOL_JOB_ID", ""),
        attempt=int(attempt) if attempt.isdigit() else 1,
        input_file=input_file,
        output_dir=output_dir,
        state=None,
        timeout_s=None,
        mode="process",
        sink=sink,
        name_job=False,
        array_id=env.get("SPOOL_ARRAY_ID") or None,
        array_index=_env_int(env.get("SPOOL_ARRAY_INDEX")),
    )
    # The server stops a job's process (cancel, timeout, its own shutdown) with SIGTERM, then
    # SIGKILL after kill_grace_s. As a cancel does in worker mode, SIGTERM sets ctx.canceled and
    # raises Canceled — here at once, in the main thread, wherever run() is (a sleep, a loop
    # without progress calls), so its try/finally cleanup runs within the grace; the process then
    # exits 1. A second SIGTERM does not interrupt that cleanup.
    running = [True]

    def on_sigterm(signum: int, frame: Any) -> None:
        first = not ctx.canceled
        ctx._cancel()
        if first and running[0]:
            raise Canceled(ctx.job_id)

    try:
        signal.signal(signal.SIGTERM, on_sigterm)
        # A parent may have started us with SIGTERM blocked (the mask is inherited across exec).
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
    except ValueError:  # not the main thread: leave SIGTERM as it is
        pass
    try:
        ctx.state = setup() if setup is not None else None
        if input_file:
            job_input = _read_json_file(input_file)
        else:
            data = sys.stdin.buffer.read() if sys.stdin is not None else b""
            job_input = json.loads(data) if data.strip() else None
        result = run(job_input, ctx)
        running[0] = False  # from here on a SIGTERM only sets ctx.canceled
        if ctx.canceled:
            raise Canceled(ctx.job_id)  # canceled, but returned anyway: the job did not succeed
        if result is not None:
            try:
                data = _dumps(result)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"run() returned a result that is not JSON: {exc}") from None
            path = os.path.join(output_dir, "result.json")
            if os.path.exists(path):
                _warn("run() wrote result.json itself; the returned result is not written over it")
            else:
                with open(ctx.output_path("result.json"), "wb") as f:
                    f.write(data + b"\n")
    except Canceled:
        running[0] = False
        _warn("canceled (SIGTERM: the job was canceled or timed out, or the server is stopping)" if ctx.canceled else "canceled")
        return 1
    except Exception:
        running[0] = False
        traceback.print_exc()
        return 1
    except BaseException as exc:  # SystemExit, KeyboardInterrupt: the job failed, as in worker mode
        running[0] = False
        traceback.print_exc()
        _warn(f"run() ended with {_describe(exc)}: the job failed (return a result, or raise)")
        code = exc.code if isinstance(exc, SystemExit) else None
        return code if isinstance(code, int) and 0 < code < 256 else 1
    finally:
        _flush_std()
    return 0


# --------------------------------------------------------------------------------------------
# Dry run (no server)


def _file_stamps(folder: str) -> Dict[str, Any]:
    """Each file under `folder` (relative path) with what changes when it is written: its
    inode, size and modification time."""
    stamps: Dict[str, Any] = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                info = os.stat(path)
            except OSError:
                continue
            stamps[os.path.relpath(path, folder)] = (info.st_ino, info.st_size, info.st_mtime_ns)
    return stamps


def _dry_run(run: RunFunction, setup: Optional[SetupFunction], argv: Optional[List[str]]) -> int:
    parser = argparse.ArgumentParser(
        prog=os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "worker",
        description=(
            "Run one job locally, without a Spool server: setup(), then run(input, ctx). "
            "Progress and logs go to stderr, the result to stdout. Ctrl-C once cancels the job "
            "(ctx.canceled), twice aborts. Under Spool (SPOOL_MODE set) the script speaks the "
            "worker protocol instead."
        ),
    )
    parser.add_argument("--input", default="{}", help="the job input as JSON, or @FILE (default: {})")
    parser.add_argument("--output-dir", help="where outputs go (default: a new temporary folder)")
    parser.add_argument("--attempt", type=int, default=1, help="ctx.attempt (default: 1)")
    args = parser.parse_args(argv)

    try:
        if args.input.startswith("@"):
            with open(args.input[1:], "rb") as f:
                job_input = json.loads(f.read())
        else:
            job_input = json.loads(args.input)
    except (OSError, ValueError) as exc:
        parser.error(f"--input: {exc}")

    scratch = tempfile.mkdtemp(prefix="spool-dry-run-")
    keep_scratch = False  # only a successful run's outputs are worth keeping
    try:
        output_dir = os.path.abspath(args.output_dir) if args.output_dir else os.path.join(scratch, "outputs")
        os.makedirs(output_dir, exist_ok=True)
        # A server run starts with an empty output folder; --output-dir may hold files from
        # before. They are left alone (never deleted: it may be `.`), and the closing line lists
        # only the files this run wrote or rewrote.
        before = _file_stamps(output_dir)
        input_file = os.path.join(scratch, "input.json")
        with open(input_file, "w", encoding="utf-8") as out:
            json.dump(job_input, out)

        ctx = Context(
            job_id="dry-run",
            attempt=args.attempt,
            input_file=input_file,
            output_dir=output_dir,
            state=None,
            timeout_s=None,
            mode="dry-run",
            sink=_ConsoleSink(),
            name_job=False,
        )

        def on_sigint(signum: int, frame: Any) -> None:
            if ctx.canceled:
                raise KeyboardInterrupt
            ctx._cancel()
            _warn("cancel requested (ctx.canceled is True); Ctrl-C again aborts")

        try:
            started = time.monotonic()
            ctx.state = setup() if setup is not None else None
            _warn(f"setup() took {time.monotonic() - started:.2f} s")
            previous = signal.signal(signal.SIGINT, on_sigint)
            # A parent may have started us with SIGINT blocked (the mask is inherited across exec).
            if hasattr(signal, "pthread_sigmask"):
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
            try:
                started = time.monotonic()
                result = run(job_input, ctx)
                ctx.check_canceled()
            finally:
                signal.signal(signal.SIGINT, previous)
            _warn(f"run() took {time.monotonic() - started:.2f} s")
            try:
                text = json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"run() returned a result that is not JSON: {exc}") from None
        except Canceled:
            _warn("the job was canceled (a server would record it as canceled)")
            return 1
        except Exception:
            traceback.print_exc()
            _warn("the job failed (a server would record it as failed)")
            return 1
        after = _file_stamps(output_dir)
        outputs = sorted(name for name, stamp in after.items() if before.get(name) != stamp)
        older = sum(1 for name, stamp in after.items() if before.get(name) == stamp)
        note = f" (and {older} file{'s' if older != 1 else ''} from before this run, not listed)" if older else ""
        _warn(f"outputs in {output_dir}: {', '.join(outputs) if outputs else '(none)'}{note}")
        print(text)
        _flush_std()
        keep_scratch = not args.output_dir  # the outputs are in it
        return 0
    finally:
        if not keep_scratch:
            # A run that failed or was canceled, or whose outputs went elsewhere: the scratch
            # folder holds nothing the user asked for.
            shutil.rmtree(scratch, ignore_errors=True)


# --------------------------------------------------------------------------------------------


def serve(
    run: RunFunction,
    setup: Optional[SetupFunction] = None,
    *,
    info: InfoSource = None,
    argv: Optional[List[str]] = None,
) -> NoReturn:
    """Run ``run`` as a Spool job or worker, as the environment says, and exit.

    - ``SPOOL_MODE=worker``: protocol v2. ``setup()`` once, ``ready``, then jobs until
      ``shutdown`` or the end of ``SPOOL_COMMANDS`` (exit 0). ``info`` (a dict, or a function
      of the state returning one) adds fields to the ``ready`` message's ``info``.
    - ``SPOOL_MODE=process``, or no ``SPOOL_MODE`` but ``SPOOL_INPUT_FILE`` set: one job,
      protocol v1. Exit 0 on success (a result that is not None is written to
      ``$SPOOL_OUTPUT_DIR/result.json``), 1 on an exception. SIGTERM cancels the job:
      ``ctx.canceled`` turns True and ``Canceled`` is raised in ``run()``, so its cleanup runs.
    - Otherwise a local dry run: ``--input JSON|@FILE --output-dir DIR`` (``argv`` defaults
      to ``sys.argv[1:]``; it is only parsed in a dry run).
    """
    mode = os.environ.get("SPOOL_MODE", "")
    if mode == "worker":
        code = _Worker(run, setup, info).serve()
    elif mode == "process" or (not mode and os.environ.get("SPOOL_INPUT_FILE")):
        code = _serve_process(run, setup)
    elif mode:
        _warn(f"unknown SPOOL_MODE={mode!r} (expected 'worker' or 'process')")
        code = 2
    else:
        code = _dry_run(run, setup, argv)
    _flush_std()
    sys.exit(code)
