#!/usr/bin/env bash
# Generated-client test: the OpenAPI document the server serves must make a working typed client.
#
#   Tests/openapi-generator/run.sh .build/debug/spool
#
# Starts `spool serve` (port 0, a temporary data folder, an administrator's token), fetches
# /openapi.json, validates it (openapi-spec-validator), generates a Python client from it with
# openapi-python-client into a temporary folder, imports it, and with that client checks that
# a 404 (unknown job id) and a 422 (submit type "nope") parse into the generated Problem model
# (and a 201 into Job). Builds nothing, edits nothing in the checkout; the server is stopped by
# PID and the temporary folder removed on exit. Needs: python3 -m pip install httpx
# openapi-spec-validator openapi-python-client. Bounded: 30 s to start, 180 s to generate,
# 60 s for the checks. Exits 0 when every check passes.
set -uo pipefail

spool=${1:?usage: Tests/openapi-generator/run.sh PATH/TO/spool}
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$spool" ] || { echo "openapi-generator: $spool is not an executable" >&2; exit 2; }

work=$(mktemp -d)
data="$work/data"
. "$here/../lib/spool-server.sh"
cleanup() {
    spool_stop 10
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The same token a deployed server would want (auth: auto requires it once it exists).
token=$(env -u SPOOL_TOKEN "$spool" token create --data-dir "$data" --name openapi-generator --admin | tail -1) \
    || { echo "openapi-generator: spool token create failed" >&2; exit 2; }
spool_start openapi-generator "$work" "$spool" --data-dir "$data" --gpus none --log-level warning
echo "openapi-generator: spool (pid $server) at $url"

export SPOOL_TEST_URL=$url SPOOL_TEST_TOKEN=$token
cd "$work"   # nothing is written into the checkout
timeout --kill-after=10 300 python3 "$here/check_generated.py" "$work"
status=$?
if ! kill -0 "$server" 2>/dev/null; then
    echo "openapi-generator: the server died during the run:" >&2
    tail -20 "$work/stderr" >&2
    [ "$status" -eq 0 ] && status=1
fi
echo "openapi-generator: $([ "$status" -eq 0 ] && echo passed || echo "FAILED ($status)")"
exit "$status"
