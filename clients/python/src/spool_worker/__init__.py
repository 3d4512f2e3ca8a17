"""Write Spool jobs and warm workers in Python.

```python
import spool_worker

def setup():                 # once per worker process; the value becomes ctx.state
    return load_model()

def run(input, ctx):         # once per job; return JSON (or None)
    ctx.progress(0.5, "halfway")
    with open(ctx.output_path("image.png"), "wb") as f:
        ...
    return {"pixels": 123}

if __name__ == "__main__":
    spool_worker.serve(run, setup=setup)
```

`serve()` speaks worker protocol v2 when Spool starts the script in worker mode, runs one job
when started in process mode (protocol v1), and otherwise offers a local dry run
(`python worker.py --input '{...}' --output-dir DIR`). Standard library only.
"""

from ._core import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    Canceled,
    Context,
    RunFunction,
    SetupFunction,
    __version__,
    serve,
)

__all__ = [
    "Canceled",
    "Context",
    "MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "RunFunction",
    "SetupFunction",
    "__version__",
    "serve",
]
