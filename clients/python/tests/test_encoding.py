"""In-process checks of message encoding and paths (no subprocess)."""

import json

import pytest

import spool_worker
from spool_worker import _core


def _line(msg, field=None):
    line = _core._encode_line(msg, field)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert len(line) <= spool_worker.MAX_MESSAGE_BYTES
    return json.loads(line)


@pytest.mark.parametrize(
    "text",
    ["a" * 5000, "é" * 3000, "😀" * 2000, '"\\\n\t\x01' * 1500, "ok", "x" * 4060, "€" * 1400],
)
def test_truncation_fits_and_keeps_a_prefix(text):
    msg = _line({"type": "log", "job": "job_" + "a" * 26, "line": text}, "line")
    out = msg["line"]
    if out != text:
        assert out.endswith("…[truncated]")
        kept = out[: -len("…[truncated]")]
        assert text.startswith(kept) and len(kept) > 100


def test_exactly_at_the_limit():
    base = {"type": "log", "line": ""}
    room = spool_worker.MAX_MESSAGE_BYTES - len(_core._dumps(base)) - 1
    fits = {"type": "log", "line": "z" * room}
    assert len(_core._encode_line(fits)) == spool_worker.MAX_MESSAGE_BYTES
    with pytest.raises(_core._MessageTooLarge):
        _core._encode_line({"type": "log", "line": "z" * (room + 1)})


def test_json_rules():
    assert _line({"type": "x", "v": 1.5}) == {"type": "x", "v": 1.5}
    with pytest.raises(ValueError):
        _core._dumps({"v": float("inf")})

    class Scalar:  # looks like a numpy scalar
        def item(self):
            return 3

    class Array:  # looks like a numpy array
        def tolist(self):
            return [1, 2]

    assert json.loads(_core._dumps({"s": Scalar(), "a": Array()})) == {"s": 3, "a": [1, 2]}
    assert json.loads(_core._dumps({"bad": "\udc80"})) == {"bad": "?"}  # lone surrogate


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "", ".", "a/../../b"])
def test_output_names_stay_inside(name):
    with pytest.raises(ValueError):
        _core._safe_relpath(name)


def test_output_path_creates_folders(tmp_path):
    ctx = _core.Context(
        job_id="j", attempt=1, input_file=None, output_dir=str(tmp_path / "out"), state=None,
        timeout_s=None, mode="dry-run", sink=_core._ConsoleSink(), name_job=False,
    )
    path = ctx.output_path("a/b/c.png")
    assert path == str(tmp_path / "out" / "a" / "b" / "c.png")
    assert (tmp_path / "out" / "a" / "b").is_dir()
    assert ctx.output_path("a/./b/../d.txt").endswith("out/a/d.txt")


def test_progress_rules(capsys):
    sent = []

    class Sink(_core._Sink):
        def send(self, msg, truncate=None):
            sent.append(msg)

    ctx = _core.Context(
        job_id="j", attempt=1, input_file=None, output_dir="/tmp", state=None,
        timeout_s=None, mode="worker", sink=Sink(), name_job=True,
    )
    ctx.progress(2)
    ctx.progress(-1, "m")
    assert [m["fraction"] for m in sent] == [1.0, 0.0]
    with pytest.raises(ValueError):
        ctx.progress(float("nan"))
    with pytest.raises(TypeError):
        ctx.progress("half")
    ctx._cancel()
    assert ctx.canceled
    with pytest.raises(spool_worker.Canceled):
        ctx.progress(0.5)
    with pytest.raises(spool_worker.Canceled):
        ctx.check_canceled()
    assert not issubclass(spool_worker.Canceled, Exception)


def test_ready_info_survives_bad_user_info(capsys):
    assert _core._ready_info({"device": "cuda:0"}, None, 1.0)["device"] == "cuda:0"
    assert _core._ready_info(lambda state: {"n": state}, 7, 1.0)["n"] == 7
    for bad in ({"x": object()}, {"x": "y" * 5000}, lambda state: 1 / 0):
        info = _core._ready_info(bad, None, 1.0)
        assert set(info) == {"kit", "python", "pid", "setup_s"}
    assert "left the user's info out" in capsys.readouterr().err
