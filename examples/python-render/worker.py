"""Spool example: a warm Python render worker.

setup() "loads a model" once per worker process (a colour palette made by a random projection
and a noise texture, plus a deliberate pause standing in for reading weights from disk); each
job renders a Mandelbrot set with it and writes image.png. NumPy on the CPU, or PyTorch on CUDA
when torch is installed and sees a GPU.

    python3 examples/python-render/worker.py --input '{"width": 320, "height": 240}' --output-dir out

Environment: RENDER_BACKEND=auto (default) | numpy | torch (torch on CUDA if available,
else on the CPU — handy to check the torch path without a GPU).
"""

from __future__ import annotations

import math
import os
import struct
import sys
import time
import zlib
from typing import Any, Dict, Optional

try:
    import numpy as np
except ImportError:
    sys.stderr.write(
        "python-render: this worker needs NumPy, which is not installed for "
        f"{sys.executable}.\n  Install it with:  {sys.executable} -m pip install numpy\n"
    )
    sys.exit(1)

try:
    import spool_worker
except ImportError:  # running from a checkout without installing the kit
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python", "src"))
    import spool_worker

PALETTE_SIZE = 4096
TEXTURE_SIZE = 512
SETUP_SECONDS = 1.0  # the pretend model takes this long to "load"
DEFAULTS = {"width": 256, "height": 256, "steps": 100}
LIMITS = {"width": 4096, "height": 4096, "steps": 1000}


class Model:
    """What setup() returns: the palette and texture, on the device the jobs render on."""

    def __init__(self, backend: str, device: str, palette: Any, texture: Any, torch: Any = None) -> None:
        self.backend = backend  # "numpy" or "torch"
        self.device = device  # "cpu" or "cuda:0"
        self.palette = palette  # (PALETTE_SIZE, 3) float32, 0..255
        self.texture = texture  # (TEXTURE_SIZE, TEXTURE_SIZE) float32, 0..1
        self.torch = torch

    def info(self) -> Dict[str, Any]:
        info: Dict[str, Any] = {"backend": self.backend, "device": self.device, "numpy": np.__version__}
        if self.torch is not None:
            info["torch"] = self.torch.__version__
            if self.device.startswith("cuda"):
                info["gpu"] = self.torch.cuda.get_device_name(0)
        return info


# --------------------------------------------------------------------------------------------
# setup: "load the model"


def _value_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly interpolated random grid: one octave of value noise, 0..1, tileable."""
    grid = rng.random((cells, cells), dtype=np.float32)
    u = np.arange(size, dtype=np.float32) * (cells / size)
    i0 = np.floor(u).astype(np.int64)
    i1 = (i0 + 1) % cells
    f = (u - i0).astype(np.float32)
    f = f * f * (3 - 2 * f)  # smoothstep
    top = grid[i0][:, i0] * (1 - f)[None, :] + grid[i0][:, i1] * f[None, :]
    bottom = grid[i1][:, i0] * (1 - f)[None, :] + grid[i1][:, i1] * f[None, :]
    return top * (1 - f)[:, None] + bottom * f[:, None]


def _build_palette(rng: np.random.Generator) -> np.ndarray:
    """A random projection of sinusoidal features of t in 0..1 to RGB ("the weights")."""
    t = np.linspace(0.0, 1.0, PALETTE_SIZE, dtype=np.float32)[:, None]
    k = np.arange(1, 9, dtype=np.float32)[None, :]
    phase = rng.uniform(0, 2 * np.pi, size=(1, 8)).astype(np.float32)
    features = np.concatenate([np.sin(np.pi * k * t + phase), np.cos(np.pi * k * t + phase)], axis=1)
    weights = rng.normal(0.0, 0.6, size=(16, 3)).astype(np.float32)
    rgb = 1 / (1 + np.exp(-(features @ weights)))  # sigmoid
    ramp = np.sqrt(t)  # dark far out, bright near the set's edge
    return (255 * (0.2 + 0.8 * ramp) * (0.25 + 0.75 * rgb)).astype(np.float32)


def _pick_backend() -> tuple:
    wanted = os.environ.get("RENDER_BACKEND", "auto").lower()
    if wanted not in ("auto", "numpy", "torch"):
        raise ValueError(f"RENDER_BACKEND must be auto, numpy or torch, not {wanted!r}")
    if wanted == "numpy":
        return "numpy", "cpu", None
    try:
        import torch  # type: ignore[import-not-found]
    except ImportError:
        if wanted == "torch":
            raise RuntimeError("RENDER_BACKEND=torch but torch is not installed") from None
        return "numpy", "cpu", None
    if torch.cuda.is_available():
        return "torch", "cuda:0", torch
    if wanted == "torch":
        return "torch", "cpu", torch
    return "numpy", "cpu", None  # torch without a GPU: NumPy is as good on the CPU


def setup() -> Model:
    started = time.monotonic()
    backend, device, torch = _pick_backend()
    rng = np.random.default_rng(20240611)
    palette = _build_palette(rng)
    texture = sum(_value_noise(rng, TEXTURE_SIZE, cells) / 2**o for o, cells in enumerate((8, 16, 32, 64)))
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    if torch is not None:
        palette = torch.from_numpy(palette).to(device)
        texture = torch.from_numpy(texture.astype(np.float32)).to(device)
    # Stand-in for reading weights from disk: a real model takes a while, once per worker.
    time.sleep(max(0.0, SETUP_SECONDS - (time.monotonic() - started)))
    model = Model(backend, device, palette, texture, torch)
    print(f"python-render: model loaded in {time.monotonic() - started:.2f} s; rendering with {model.info()}",
          file=sys.stderr, flush=True)
    return model


# --------------------------------------------------------------------------------------------
# run: render one image


def _dimensions(job_input: Any) -> Dict[str, int]:
    if job_input is None:
        job_input = {}
    if not isinstance(job_input, dict):
        raise ValueError("input must be an object like {\"width\": 256, \"height\": 256, \"steps\": 100}")
    out = {}
    for key, default in DEFAULTS.items():
        value = job_input.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= LIMITS[key]:
            raise ValueError(f"{key} must be an integer from 1 to {LIMITS[key]}, not {value!r}")
        out[key] = value
    return out


def _band_numpy(model: Model, y0: int, y1: int, width: int, height: int, steps: int, ctx: spool_worker.Context) -> np.ndarray:
    scale = max(3.4 / width, 2.6 / height)
    cols = np.arange(width, dtype=np.float32)
    rows = np.arange(y0, y1, dtype=np.float32)
    cx = (-0.6 + (cols - width / 2 + 0.5) * scale)[None, :].repeat(y1 - y0, axis=0)
    cy = ((rows - height / 2 + 0.5) * scale)[:, None].repeat(width, axis=1)
    zx = np.zeros_like(cx)
    zy = np.zeros_like(cx)
    smooth = np.zeros_like(cx)
    alive = np.ones(cx.shape, dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        for i in range(steps):
            zx2, zy2 = zx * zx, zy * zy
            r2 = zx2 + zy2
            escaped = alive & (r2 > 4.0)
            # smooth iteration count: i + 1 - log2(log|z|)
            smooth = np.where(escaped, i + 1 - np.log2(0.5 * np.log(np.maximum(r2, 4.0))), smooth)
            alive &= ~escaped
            zx, zy = np.where(alive, zx2 - zy2 + cx, zx), np.where(alive, 2 * zx * zy + cy, zy)
            if i % 32 == 31:
                ctx.check_canceled()
                if not alive.any():
                    break
    t = np.clip(np.log1p(np.maximum(smooth, 0.0)) / math.log1p(steps), 0.0, 1.0)
    index = (t * (PALETTE_SIZE - 1)).astype(np.int64)
    rgb = model.palette[index]
    shade = 0.7 + 0.3 * model.texture[(np.arange(y0, y1) % TEXTURE_SIZE)[:, None], (np.arange(width) % TEXTURE_SIZE)[None, :]]
    rgb = rgb * shade[..., None]
    rgb[alive] = 0.0  # inside the set: black
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _band_torch(model: Model, y0: int, y1: int, width: int, height: int, steps: int, ctx: spool_worker.Context) -> np.ndarray:
    torch = model.torch
    dev = model.device
    scale = max(3.4 / width, 2.6 / height)
    cols = torch.arange(width, dtype=torch.float32, device=dev)
    rows = torch.arange(y0, y1, dtype=torch.float32, device=dev)
    cx = (-0.6 + (cols - width / 2 + 0.5) * scale)[None, :].expand(y1 - y0, width)
    cy = ((rows - height / 2 + 0.5) * scale)[:, None].expand(y1 - y0, width)
    zx = torch.zeros((y1 - y0, width), dtype=torch.float32, device=dev)
    zy = torch.zeros_like(zx)
    smooth = torch.zeros_like(zx)
    alive = torch.ones(zx.shape, dtype=torch.bool, device=dev)
    with torch.no_grad():
        for i in range(steps):
            zx2, zy2 = zx * zx, zy * zy
            r2 = zx2 + zy2
            escaped = alive & (r2 > 4.0)
            smooth = torch.where(escaped, (i + 1) - torch.log2(0.5 * torch.log(torch.clamp(r2, min=4.0))), smooth)
            alive = alive & ~escaped
            zx, zy = torch.where(alive, zx2 - zy2 + cx, zx), torch.where(alive, 2 * zx * zy + cy, zy)
            if i % 32 == 31:
                ctx.check_canceled()
                if not bool(alive.any()):  # a GPU sync, so only now and then
                    break
        t = torch.clamp(torch.log1p(torch.clamp(smooth, min=0.0)) / math.log1p(steps), 0.0, 1.0)
        index = (t * (PALETTE_SIZE - 1)).long()
        rgb = model.palette[index]
        ty = (torch.arange(y0, y1, device=dev) % TEXTURE_SIZE)[:, None]
        tx = (torch.arange(width, device=dev) % TEXTURE_SIZE)[None, :]
        rgb = rgb * (0.7 + 0.3 * model.texture[ty, tx])[..., None]
        rgb = torch.where(alive[..., None], torch.zeros_like(rgb), rgb)
        return torch.clamp(rgb, 0, 255).to(torch.uint8).cpu().numpy()


def write_png(path: str, rgb: np.ndarray) -> None:
    """An 8-bit RGB PNG with zlib: signature, IHDR, one IDAT, IEND (filter 0 on every row)."""
    height, width, channels = rgb.shape
    assert channels == 3 and rgb.dtype == np.uint8
    raw = np.zeros((height, 1 + 3 * width), dtype=np.uint8)
    raw[:, 1:] = rgb.reshape(height, 3 * width)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n"
    png += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
    png += chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def run(job_input: Any, ctx: spool_worker.Context) -> Dict[str, Any]:
    model: Model = ctx.state
    dims = _dimensions(job_input)
    width, height, steps = dims["width"], dims["height"], dims["steps"]
    render_band = _band_torch if model.backend == "torch" else _band_numpy
    # Bands bound the memory and give progress and cancel points; the GPU takes bigger ones.
    band = max(1, math.ceil(height / (8 if model.backend == "torch" else 32)))
    image = np.zeros((height, width, 3), dtype=np.uint8)
    started = time.monotonic()
    ctx.progress(0.0, f"rendering {width}x{height}, {steps} steps on {model.device}")
    for y0 in range(0, height, band):
        y1 = min(height, y0 + band)
        image[y0:y1] = render_band(model, y0, y1, width, height, steps, ctx)
        ctx.progress(y1 / height, f"row {y1} of {height}")
    write_png(ctx.output_path("image.png"), image)
    seconds = time.monotonic() - started
    ctx.log(f"rendered {width}x{height} ({steps} steps) on {model.device} in {seconds:.2f} s")
    return {
        "device": model.device,
        "backend": model.backend,
        "width": width,
        "height": height,
        "steps": steps,
        "mean": round(float(image.mean()), 3),
        "seconds": round(seconds, 3),
    }


if __name__ == "__main__":
    spool_worker.serve(run, setup=setup, info=lambda model: model.info())
