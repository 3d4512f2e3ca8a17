"""Generate a Python client from the server's /openapi.json and use it (called by run.sh).

    SPOOL_TEST_URL=http://127.0.0.1:PORT SPOOL_TEST_TOKEN=… python3 check_generated.py WORKDIR

Steps, each printed; the first failure ends the run with status 1:
  1. GET /openapi.json, written to WORKDIR/openapi.json;
  2. validate it with openapi-spec-validator (OpenAPI 3.1);
  3. generate a client with openapi-python-client into WORKDIR/gen/spool_openapi_client (a
     failure names the parts of the document known to trip the generator, with a fix);
  4. import it, and with it: an unknown job id → 404 parsed as `Problem`; submit type "nope" →
     422 `Problem`; an input failing the schema → 422 `Problem` with `errors`; no token → 401
     `Problem`; a valid submit → 201 `Job`, read back (200 `Job`) and listed (200 `JobPage`).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import httpx

PACKAGE = "spool_openapi_client"
UNKNOWN_JOB = "job_" + "0" * 26


class CheckFailed(Exception):
    pass


def step(text: str) -> None:
    print(f"openapi-generator: {text}", flush=True)


def check(condition: bool, text: str) -> None:
    if not condition:
        raise CheckFailed(text)


def pointer(parts: List[Any]) -> str:
    return "/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def walk(node: Any, path: List[Any]) -> Iterator[Tuple[List[Any], Any]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, path + [key])
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, path + [index])


def known_generator_traps(document: Any) -> List[str]:
    """Parts of the document openapi-python-client (0.2x) is known to turn into broken code."""
    traps = []
    for path, node in walk(document, []):
        if not (isinstance(node, dict) and isinstance(node.get("properties"), dict)):
            continue
        required = set(node.get("required") or [])
        for name, prop in node["properties"].items():
            if isinstance(prop, dict) and "const" in prop and not isinstance(prop["const"], str) and name not in required:
                replacement = {"type": {bool: "boolean", int: "integer", float: "number"}.get(type(prop["const"]), "string"),
                               "enum": [prop["const"]]}
                replacement.update({k: v for k, v in prop.items() if k not in ("const", "type")})
                traps.append(
                    f"{pointer(path + ['properties', name])} is an optional property with the non-string const "
                    f"{json.dumps(prop['const'])}: the generator writes `if {name} != {json.dumps(prop['const']).title()}and not "
                    f"isinstance(...)` (no space before `and`), a syntax error. Replace it with "
                    f"{json.dumps(replacement)} (the same values; the generator makes it a plain bool)."
                )
    return traps


def fetch_document(url: str, token: str, work: Path) -> Any:
    response = httpx.get(f"{url}/openapi.json", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    check(response.status_code == 200, f"GET /openapi.json answered {response.status_code}: {response.text[:300]}")
    document = response.json()
    (work / "openapi.json").write_bytes(response.content)
    step(f"fetched /openapi.json (OpenAPI {document.get('openapi')}, {len(document.get('paths', {}))} paths, "
         f"{len(document.get('components', {}).get('schemas', {}))} schemas)")
    return document


def validate(document: Any) -> None:
    from openapi_spec_validator import validate as validate_spec

    try:
        validate_spec(document)
    except Exception as error:  # the validator's own error types vary by version
        raise CheckFailed(f"openapi-spec-validator rejects the document: {error}") from error
    step("openapi-spec-validator: valid")


def generate(document: Any, work: Path) -> Path:
    gen = work / "gen"
    gen.mkdir()
    target = gen / PACKAGE
    command = ["openapi-python-client", "generate", "--path", str(work / "openapi.json"),
               "--output-path", str(target), "--meta", "none"]
    started = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=work)
    except FileNotFoundError:
        command[0:1] = [sys.executable, "-m", "openapi_python_client"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=180, cwd=work)
    output = (done.stdout + done.stderr).strip()
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for index, line in enumerate(lines):  # e.g. a response whose content type it cannot model
        if line.startswith("WARNING"):
            why = lines[index + 1] if index + 1 < len(lines) else ""
            step(f"generator warning: {line} {re.sub(r'<[^>]*>', '…', why)}")
    broken = done.returncode != 0 or "client was not created" in output
    if not broken:
        try:
            compile_all(target)
        except SyntaxError as error:
            broken = True
            output += f"\n{error.filename}:{error.lineno}: {error.msg}"
    if broken:
        print(output, flush=True)
        traps = known_generator_traps(document)
        hint = "".join(f"\n  - {t}" for t in traps) or "\n  (no known trap found in the document; see the generator's output above)"
        raise CheckFailed(f"openapi-python-client could not generate a working client (exit {done.returncode}). "
                          f"What in the document causes it, and the fix:{hint}")
    step(f"openapi-python-client generated {sum(1 for _ in target.rglob('*.py'))} modules in {time.monotonic() - started:.1f} s")
    return gen


def compile_all(root: Path) -> None:
    for source in root.rglob("*.py"):
        compile(source.read_text(), str(source), "exec")


def exercise(gen: Path, url: str, token: str) -> None:
    sys.path.insert(0, str(gen))
    package = importlib.import_module(PACKAGE)
    get_job = importlib.import_module(f"{PACKAGE}.api.jobs.get_job")
    submit_job = importlib.import_module(f"{PACKAGE}.api.jobs.submit_job")
    list_jobs = importlib.import_module(f"{PACKAGE}.api.jobs.list_jobs")
    models = importlib.import_module(f"{PACKAGE}.models")
    Problem, Job, JobPage, SubmitBody = models.Problem, models.Job, models.JobPage, models.SubmitBody
    step(f"imported the generated package {PACKAGE}")

    with package.AuthenticatedClient(base_url=url, token=token, timeout=httpx.Timeout(15.0)) as client:
        # 404: an unknown job id.
        answer = get_job.sync_detailed(UNKNOWN_JOB, client=client)
        problem = answer.parsed
        check(answer.status_code == 404, f"GET /v1/jobs/{UNKNOWN_JOB} answered {answer.status_code}, not 404")
        check(isinstance(problem, Problem), f"the 404 parsed as {type(problem).__name__}, not Problem: {answer.content[:300]!r}")
        check((problem.status, problem.type_) == (404, "urn:spool:problem:not-found"), f"the 404 Problem says {problem}")
        check(UNKNOWN_JOB in problem.detail and problem.instance == f"/v1/jobs/{UNKNOWN_JOB}", f"the 404 Problem says {problem}")
        step(f"404 → Problem(type={problem.type_!r}, detail={problem.detail!r})")

        # 422: a type the server does not have.
        answer = submit_job.sync_detailed(client=client, body=SubmitBody(type_="nope"))
        problem = answer.parsed
        check(answer.status_code == 422, f"submit type 'nope' answered {answer.status_code}, not 422")
        check(isinstance(problem, Problem), f"the 422 parsed as {type(problem).__name__}, not Problem: {answer.content[:300]!r}")
        check(problem.status == 422 and problem.type_.startswith("urn:spool:problem:"), f"the 422 Problem says {problem}")
        step(f"422 → Problem(type={problem.type_!r}, detail={problem.detail!r})")

        # 422 with field errors: an input failing the render type's schema.
        answer = submit_job.sync_detailed(client=client, body=SubmitBody(type_="render", input_={"width": -1, "height": 24}))
        problem = answer.parsed
        check(answer.status_code == 422 and isinstance(problem, Problem), f"a bad render input answered {answer.status_code}: {answer.content[:300]!r}")
        errors = problem.errors if isinstance(problem.errors, list) else []
        check(any("/width" in e for e in errors), f"the 422 Problem's errors do not name /width: {problem}")
        step(f"422 → Problem(type={problem.type_!r}, errors={errors})")

        # 201: a job, parsed as Job, then read back and listed.
        answer = submit_job.sync_detailed(client=client, body=SubmitBody(type_="render", input_={"width": 32, "height": 24, "samples": 1}),
                                          idempotency_key="openapi-generator-1")
        job = answer.parsed
        check(answer.status_code == 201 and isinstance(job, Job), f"a render submit answered {answer.status_code}: {answer.content[:300]!r}")
        deadline = time.monotonic() + 30
        while True:
            answer = get_job.sync_detailed(job.id, client=client, wait=5)
            check(answer.status_code == 200 and isinstance(answer.parsed, Job), f"GET the job answered {answer.status_code}: {answer.content[:300]!r}")
            state = str(getattr(answer.parsed.state, "value", answer.parsed.state))
            if state in ("succeeded", "failed", "canceled") or time.monotonic() > deadline:
                break
        check(state == "succeeded", f"the render job ended {state}")
        page = list_jobs.sync_detailed(client=client, limit=10).parsed
        check(isinstance(page, JobPage) and any(j.id == job.id for j in page.jobs), f"the job list parsed as {page!r}")
        step(f"201 → Job({job.id}), 200 → Job(state={state!r}), 200 → JobPage({len(page.jobs)} job(s))")

    # 401: no token (the server has one, so it requires one).
    with package.Client(base_url=url, timeout=httpx.Timeout(15.0)) as anonymous:
        answer = get_job.sync_detailed(UNKNOWN_JOB, client=anonymous)
        check(answer.status_code == 401 and isinstance(answer.parsed, Problem), f"no token answered {answer.status_code}: {answer.content[:300]!r}")
        step(f"401 → Problem(type={answer.parsed.type_!r})")


def main() -> int:
    work = Path(sys.argv[1]).resolve()
    url, token = os.environ["SPOOL_TEST_URL"], os.environ["SPOOL_TEST_TOKEN"]
    try:
        document = fetch_document(url, token, work)
        validate(document)
        gen = generate(document, work)
        exercise(gen, url, token)
    except CheckFailed as failure:
        print(f"openapi-generator: FAILED: {failure}", file=sys.stderr, flush=True)
        return 1
    except subprocess.TimeoutExpired as timeout:
        print(f"openapi-generator: FAILED: {timeout.cmd[0]} ran past {timeout.timeout} s", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
