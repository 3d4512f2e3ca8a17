"""Process mode (protocol v1: one process per job) and the local dry run."""

import json
import os
import select

from conftest import WORKERS, run_script

SCRIPT = str(WORKERS / "kit_worker.py")


def _drain(fd):
    data = b""
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return [json.loads(line) for line in data.decode().splitlines()]


def _job_dir(tmp_path, job_input):
    """A job's directory as the server makes it: (directory, outputs, messages FIFO, its fd)."""
    job_dir = tmp_path / "job"
    outputs = job_dir / "outputs"
    outputs.mkdir(parents=True)
    (job_dir / "input.json").write_text(json.dumps(job_input))
    messages = job_dir / "messages.fifo"
    os.mkfifo(messages)
    return job_dir, outputs, messages, os.open(messages, os.O_RDWR | os.O_NONBLOCK)


def _process_job(tmp_path, job_input, extra_env=None, stdin=b"", input_file=True, mode="process"):
    job_dir, outputs, messages, fd = _job_dir(tmp_path, job_input)
    try:
        env = {
            "SPOOL_PROTOCOL": "1",
            "SPOOL_JOB_ID": "job_process",
            "SPOOL_JOB_TYPE": "kit",
            "SPOOL_ATTEMPT": "1",
            "SPOOL_OUTPUT_DIR": str(outputs),
            "SPOOL_MESSAGES": str(messages),
            "SPOOL_SLOT": "0",
        }
        if mode:
            env["SPOOL_MODE"] = mode
        if input_file:
            env["SPOOL_INPUT_FILE"] = str(job_dir / "input.json")
        env.update(extra_env or {})
        proc = run_script([SCRIPT], env, stdin=stdin, cwd=job_dir)
        return proc, outputs, _drain(fd)
    finally:
        os.close(fd)


def test_process_mode_success(tmp_path):
    proc, outputs, messages = _process_job(tmp_path, {"action": "ok", "text": "v1"})
    assert proc.returncode == 0, proc.stderr.decode()
    # v1 progress lines: no "job" field
    assert messages == [
        {"type": "progress", "fraction": 0.5, "message": "halfway"},
        {"type": "progress", "fraction": 1.0, "message": "done", "preview": "sub/out.txt"},
    ]
    assert (outputs / "sub" / "out.txt").read_text() == "v1"
    result = json.loads((outputs / "result.json").read_text())
    assert result["job"] == "job_process" and result["mode"] == "process" and result["model"] == "loaded"
    assert "hello from the job" in proc.stderr.decode()  # ctx.log → stderr (the job's log)


def test_process_mode_array_task(tmp_path):
    proc, outputs, _ = _process_job(tmp_path, {"action": "array", "item": 3},
                                    extra_env={"SPOOL_ARRAY_ID": "arr_y", "SPOOL_ARRAY_INDEX": "3"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert json.loads((outputs / "result.json").read_text()) == {"array_id": "arr_y", "array_index": 3, "item": 3}


def test_process_mode_failure(tmp_path):
    proc, outputs, messages = _process_job(tmp_path, {"action": "raise", "why": "v1"})
    assert proc.returncode == 1
    stderr = proc.stderr.decode()
    assert "Traceback (most recent call last)" in stderr
    assert "ValueError: boom: v1" in stderr
    assert not (outputs / "result.json").exists()
    assert messages == [{"type": "progress", "fraction": 0.1, "message": "about to fail"}]


def test_process_mode_fails_a_run_that_exits_or_is_interrupted_as_worker_mode_does(tmp_path):
    # Found by attacking the build: sys.exit(0) in run() succeeded in process mode (failed in
    # worker mode), and a KeyboardInterrupt ended as "killed by signal 2" though none was sent.
    cases = [("exit0", {"action": "exit", "code": 0}, 1, "SystemExit: 0"),
             ("interrupt", {"action": "interrupt"}, 1, "KeyboardInterrupt"),
             ("exit3", {"action": "exit", "code": 3}, 3, "SystemExit: 3")]  # a code of its own is kept
    for name, job_input, code, error in cases:
        (tmp_path / name).mkdir()
        proc, outputs, _ = _process_job(tmp_path / name, job_input)
        assert proc.returncode == code, (name, proc.returncode, proc.stderr.decode())
        assert error in proc.stderr.decode(), name
        assert not (outputs / "result.json").exists()


def test_process_mode_without_spool_mode_but_with_input_file(tmp_path):
    proc, outputs, _ = _process_job(tmp_path, {"action": "ok"}, mode=None)
    assert proc.returncode == 0, proc.stderr.decode()
    assert (outputs / "result.json").exists()


def test_process_mode_reads_stdin_without_input_file(tmp_path):
    job_input = {"action": "ok", "text": "from stdin"}
    proc, outputs, _ = _process_job(tmp_path, {}, input_file=False, stdin=json.dumps(job_input).encode())
    assert proc.returncode == 0, proc.stderr.decode()
    assert (outputs / "sub" / "out.txt").read_text() == "from stdin"


def test_process_mode_none_result_writes_no_file(tmp_path):
    proc, outputs, _ = _process_job(tmp_path, {"action": "big"})
    assert proc.returncode == 0, proc.stderr.decode()
    assert not (outputs / "result.json").exists()


def test_process_mode_garbage_stdout(tmp_path):
    proc, _, messages = _process_job(tmp_path, {"action": "garbage"})
    assert proc.returncode == 0
    assert messages == [{"type": "progress", "fraction": 0.5, "message": "after the garbage"}]
    assert b"from stdout" in proc.stdout


def test_dry_run(tmp_path):
    out = tmp_path / "out"
    proc = run_script([SCRIPT, "--input", '{"action": "ok", "text": "dry"}', "--output-dir", str(out)], {})
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout.decode().split("setup printed this to stdout\n", 1)[1])
    assert result["job"] == "dry-run" and result["mode"] == "dry-run" and result["model"] == "loaded"
    assert (out / "sub" / "out.txt").read_text() == "dry"
    stderr = proc.stderr.decode()
    assert "[ 50.0%] halfway" in stderr
    assert "[log] hello from the job" in stderr
    assert "sub/out.txt" in stderr


def test_dry_run_input_from_file_and_failure(tmp_path):
    (tmp_path / "in.json").write_text('{"action": "raise"}')
    proc = run_script([SCRIPT, "--input", "@" + str(tmp_path / "in.json"), "--output-dir", str(tmp_path / "o")], {})
    assert proc.returncode == 1
    assert "ValueError: boom: no reason" in proc.stderr.decode()


def test_dry_run_bad_arguments(tmp_path):
    proc = run_script([SCRIPT, "--input", "{not json"], {})
    assert proc.returncode == 2
    assert "--input" in proc.stderr.decode()


def test_unknown_mode(tmp_path):
    proc = run_script([SCRIPT], {"SPOOL_MODE": "daemon"})
    assert proc.returncode == 2
    assert "unknown SPOOL_MODE" in proc.stderr.decode()


def test_dry_run_ctrl_c_cancels_cooperatively(tmp_path):
    import signal
    import subprocess
    import time

    from conftest import PYTHON, worker_env

    with open(tmp_path / "err", "wb") as err:
        proc = subprocess.Popen([PYTHON, SCRIPT, "--input", '{"action": "loop"}', "--output-dir", str(tmp_path / "o")],
                                env=worker_env({}), stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            deadline = time.monotonic() + 20
            while b"step 5" not in (tmp_path / "err").read_bytes():  # it is in the loop
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 1
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    stderr = (tmp_path / "err").read_text()
    assert "cancel requested" in stderr and "the job was canceled" in stderr
    assert "Traceback" not in stderr


def _start_process_job(tmp_path, job_input):
    """A process-mode job left running (Popen); returns (proc, messages fd)."""
    import subprocess

    from conftest import PYTHON, worker_env

    job_dir, outputs, messages, fd = _job_dir(tmp_path, job_input)
    env = {"SPOOL_MODE": "process", "SPOOL_PROTOCOL": "1", "SPOOL_JOB_ID": "job_process", "SPOOL_ATTEMPT": "1",
           "SPOOL_OUTPUT_DIR": str(outputs), "SPOOL_MESSAGES": str(messages), "SPOOL_INPUT_FILE": str(job_dir / "input.json")}
    with open(tmp_path / "err", "wb") as err:
        proc = subprocess.Popen([PYTHON, SCRIPT], env=worker_env(env), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err, cwd=str(job_dir), start_new_session=True)
    return proc, fd


def _sigterm_once_running(proc, fd):
    """SIGTERM (what the server sends on cancel, timeout and shutdown) once run() has reported
    progress; the exit status, which must come well within a kill grace."""
    import signal
    import time

    deadline = time.monotonic() + 20
    while not select.select([fd], [], [], 0.05)[0]:  # the first progress line: run() is running
        assert time.monotonic() < deadline and proc.poll() is None, "run() never reported progress"
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(3)  # a server's kill_grace_s is a few seconds
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_process_mode_sigterm_cancels_and_cleanup_runs(tmp_path):
    # Found by attacking the build: in process mode SIGTERM killed Python at once, so a canceled
    # or timed-out job's try/finally never ran (worker mode's cancel ran it).
    for action in ("cleanup", "blocked"):  # progress calls in a loop; a sleep without any
        folder = tmp_path / action
        folder.mkdir()
        marker = folder / "marker"
        proc, fd = _start_process_job(folder, {"action": action, "marker": str(marker)})
        try:
            code = _sigterm_once_running(proc, fd)
        finally:
            os.close(fd)
        stderr = (folder / "err").read_text()
        assert code == 1, (action, code, stderr)
        assert marker.read_text() == "cleaned up; canceled=True", action
        assert "canceled (SIGTERM" in stderr and "Traceback" not in stderr, stderr
        assert not (folder / "job" / "outputs" / "result.json").exists()


def test_dry_run_lists_only_this_runs_outputs(tmp_path):
    # Found by attacking the build: files already in --output-dir were listed as the run's outputs.
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "yesterday.png").write_text("stale")
    (out / "sub" / "out.txt").write_text("old")  # rewritten by the run: listed
    os.utime(out / "sub" / "out.txt", (1, 1))
    proc = run_script([SCRIPT, "--input", '{"action": "ok", "text": "new"}', "--output-dir", str(out)], {})
    assert proc.returncode == 0, proc.stderr.decode()
    closing = [line for line in proc.stderr.decode().splitlines() if "outputs in" in line]
    assert closing == [f"spool-worker: outputs in {out}: sub/out.txt (and 1 file from before this run, not listed)"]
    assert (out / "yesterday.png").read_text() == "stale"  # left alone, never deleted
    assert (out / "sub" / "out.txt").read_text() == "new"


def test_dry_run_removes_its_temporary_folder_unless_it_holds_outputs(tmp_path):
    # Found by attacking the build: a failed dry run without --output-dir left /tmp/spool-dry-run-*.
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    failed = run_script([SCRIPT, "--input", '{"action": "raise"}'], {"TMPDIR": str(scratch)})
    assert failed.returncode == 1 and "ValueError: boom" in failed.stderr.decode()
    assert list(scratch.iterdir()) == []
    succeeded = run_script([SCRIPT, "--input", '{"action": "ok"}'], {"TMPDIR": str(scratch)})
    assert succeeded.returncode == 0, succeeded.stderr.decode()
    [kept] = list(scratch.iterdir())  # the outputs are there, as the closing line says
    assert f"outputs in {kept}/outputs: sub/out.txt" in succeeded.stderr.decode()
