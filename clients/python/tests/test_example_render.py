"""examples/python-render/worker.py under the fake server (skipped without the example or NumPy)."""

import json
import struct
import subprocess
import time
import zlib

import pytest

from conftest import PYTHON, REPO, run_script, worker_env

EXAMPLE = REPO / "examples" / "python-render" / "worker.py"


def _importable(module):
    probe = subprocess.run([PYTHON, "-c", f"import {module}"], env=worker_env({}), capture_output=True, timeout=120)
    return probe.returncode == 0


@pytest.fixture(scope="module", autouse=True)
def need_example():
    if not EXAMPLE.exists():
        pytest.skip("examples/python-render is not in this checkout")


@pytest.fixture(scope="module")
def numpy_available():
    if not _importable("numpy"):
        pytest.skip(f"NumPy is not installed for {PYTHON}")


def read_png(path):
    """Decode the example's PNG (8-bit RGB, filter 0) and check its chunks."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        tag, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(tag + body) & 0xFFFFFFFF, tag
        chunks[tag] = body
        pos += 12 + length
    width, height, depth, color, _, _, _ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (depth, color) == (8, 2) and b"IEND" in chunks
    raw = zlib.decompress(chunks[b"IDAT"])
    assert len(raw) == height * (1 + 3 * width)
    rows = [raw[y * (1 + 3 * width) : (y + 1) * (1 + 3 * width)] for y in range(height)]
    assert all(row[0] == 0 for row in rows)
    pixels = b"".join(row[1:] for row in rows)
    return width, height, sum(pixels) / len(pixels)


def test_example_in_worker_mode(start_worker, numpy_available):
    server = start_worker(EXAMPLE, heartbeat_s=0.5, env={"RENDER_BACKEND": "numpy"})
    started = time.monotonic()
    ready = server.until_type("ready", timeout=60)[-1]
    assert time.monotonic() - started >= 0.9  # the pretend model load
    assert ready["info"]["device"] == "cpu" and ready["info"]["backend"] == "numpy"

    job = server.job({"width": 64, "height": 48, "steps": 50})
    seen = server.until_done(job["job"], timeout=60)
    done = seen[-1]
    assert done["type"] == "succeeded", done
    result = done["result"]
    assert {k: result[k] for k in ("device", "width", "height", "steps")} == {"device": "cpu", "width": 64, "height": 48, "steps": 50}
    fractions = [m["fraction"] for m in seen if m["type"] == "progress"]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert any(m["type"] == "output" and m["name"] == "image.png" for m in seen)
    width, height, mean = read_png(job["output_dir"] / "image.png")
    assert (width, height) == (64, 48)
    assert abs(mean - result["mean"]) < 0.01

    # warm: the second job does not set up again
    job2 = server.job({})
    done2 = server.until_done(job2["job"], timeout=60)[-1]
    assert done2["type"] == "succeeded" and done2["result"]["width"] == 256
    assert read_png(job2["output_dir"] / "image.png")[:2] == (256, 256)
    assert server.stderr().count("model loaded") == 1


def test_example_cancel_and_bad_input(start_worker, numpy_available):
    server = start_worker(EXAMPLE, env={"RENDER_BACKEND": "numpy"})
    server.until_type("ready", timeout=60)
    job = server.job({"width": 4096, "height": 4096, "steps": 1000})  # minutes on a CPU
    server.until(lambda m: m["type"] == "progress" and m["fraction"] > 0, timeout=60)
    sent = time.monotonic()
    server.send({"type": "cancel", "job": job["job"]})
    assert server.until_done(job["job"], timeout=30)[-1] == {"type": "failed", "job": job["job"], "error": "canceled"}
    assert time.monotonic() - sent < 10

    bad = server.job({"width": 0})
    done = server.until_done(bad["job"], timeout=30)[-1]
    assert done["type"] == "failed" and done["error"].startswith("ValueError: width must be an integer from 1 to 4096")
    server.send({"type": "shutdown"})
    assert server.wait_exit(10) == 0


def test_example_dry_run(tmp_path, numpy_available):
    out = tmp_path / "out"
    proc = run_script([str(EXAMPLE), "--input", '{"width": 40, "height": 30, "steps": 20}', "--output-dir", str(out)],
                      {"RENDER_BACKEND": "numpy"}, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    result = json.loads(proc.stdout)
    assert result["device"] == "cpu" and (result["width"], result["height"]) == (40, 30)
    assert read_png(out / "image.png")[:2] == (40, 30)
    assert "row 30 of 30" in proc.stderr.decode()


def test_example_without_numpy_says_so(tmp_path):
    fake = tmp_path / "no-numpy" / "numpy"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise ImportError("No module named \'numpy\' (simulated)")\n')
    env = worker_env({})
    proc = subprocess.run([PYTHON, str(EXAMPLE)], env={**env, "PYTHONPATH": f"{fake.parent}:{env['PYTHONPATH']}"},
                          capture_output=True, timeout=60)
    assert proc.returncode == 1
    stderr = proc.stderr.decode()
    assert "python-render: this worker needs NumPy" in stderr and "pip install numpy" in stderr


def test_example_torch_path_matches_numpy(tmp_path, numpy_available):
    if not _importable("torch"):
        pytest.skip(f"torch is not installed for {PYTHON}")
    results = {}
    for backend in ("numpy", "torch"):  # torch: CUDA when available, else torch on the CPU
        out = tmp_path / backend
        proc = run_script([str(EXAMPLE), "--input", '{"width": 96, "height": 64, "steps": 60}', "--output-dir", str(out)],
                          {"RENDER_BACKEND": backend}, timeout=300)
        assert proc.returncode == 0, proc.stderr.decode()
        results[backend] = json.loads(proc.stdout)
        assert read_png(out / "image.png")[:2] == (96, 64)
    assert results["torch"]["backend"] == "torch"
    assert abs(results["torch"]["mean"] - results["numpy"]["mean"]) < 1.0, results
