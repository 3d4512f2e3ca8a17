#!/usr/bin/env bash
# The Python side's tests, for CI in one line:
#
#   clients/python/run-tests.sh .build/debug/spool
#
# Installs what is missing (quietly, from PyPI), then runs, against that server binary:
#   1. the spool-client suite   (clients/python/spool-client/tests; sync and async clients)
#   2. the FastAPI example      (examples/fastapi-render/test_app.py)
#   3. the generated client     (Tests/openapi-generator/run.sh: openapi-python-client from /openapi.json)
# Each runs even when an earlier one failed; exits non-zero if any failed. Builds nothing and
# writes nothing into the checkout. About 2.5 minutes.
set -uo pipefail

binary=${1:?usage: clients/python/run-tests.sh PATH/TO/spool}
[ -x "$binary" ] || { echo "run-tests: $binary is not an executable" >&2; exit 2; }
binary=$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")
root=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python3}

# module to import → the package that provides it
need=()
for pair in httpx:httpx pytest:pytest fastapi:fastapi uvicorn:uvicorn \
            openapi_spec_validator:openapi-spec-validator openapi_python_client:openapi-python-client; do
    "$python" -c "import ${pair%%:*}" 2>/dev/null || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    echo "run-tests: installing ${need[*]}"
    "$python" -m pip install -q --disable-pip-version-check "${need[@]}" || { echo "run-tests: pip install failed" >&2; exit 2; }
fi

# The binary may be rebuilt while the tests run: every part copies it, or reads it once.
export SPOOL_BINARY=$binary
export PYTHONDONTWRITEBYTECODE=1
failed=()
run() {
    local name=$1; shift
    local start=$SECONDS
    echo "run-tests: == $name"
    if "$@"; then
        echo "run-tests: == $name passed in $((SECONDS - start)) s"
    else
        echo "run-tests: == $name FAILED (exit $?) after $((SECONDS - start)) s"
        failed+=("$name")
    fi
}
pytest_args=(-q -p no:cacheprovider -p no:benchmark -o addopts= -rsxX)

run "spool-client" bash -c 'cd "$1" && timeout --kill-after=10 600 "$2" -m pytest "${@:3}" tests' _ \
    "$root/clients/python/spool-client" "$python" "${pytest_args[@]}"
run "fastapi-render example" bash -c 'cd "$1" && timeout --kill-after=10 300 "$2" -m pytest "${@:3}" test_app.py' _ \
    "$root/examples/fastapi-render" "$python" "${pytest_args[@]}"
run "openapi-generator" timeout --kill-after=10 400 bash "$root/Tests/openapi-generator/run.sh" "$binary"

if [ ${#failed[@]} -gt 0 ]; then
    echo "run-tests: FAILED: ${failed[*]}"
    exit 1
fi
echo "run-tests: all passed"
