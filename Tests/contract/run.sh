#!/usr/bin/env bash
# Contract test: runs schemathesis against a live server with the OpenAPI document it serves
# at /openapi.json, checking every response (no 5xx, documented status, content type, headers
# and schema; bad input refused; 405 with Allow for undocumented methods).
#
#   Tests/contract/run.sh .build/debug/spool
#
# Builds nothing. Needs schemathesis (python3 -m pip install schemathesis). Bounded: at most
# SPOOL_CONTRACT_EXAMPLES (30) cases per operation and phase, and SPOOL_CONTRACT_TIME_LIMIT
# (240; a long poll may hold 60 s) seconds of wall clock for schemathesis. The run's seed is printed at the end; pass
# SPOOL_CONTRACT_SEED=N to repeat it. Exits with schemathesis' status (124 if it ran out of time).
set -uo pipefail

spool=${1:?usage: Tests/contract/run.sh PATH/TO/spool}
here=$(cd "$(dirname "$0")" && pwd)
[ -x "$spool" ] || { echo "contract: $spool is not an executable" >&2; exit 2; }

work=$(mktemp -d)
data=$(mktemp -d "$work/data.XXXX")
# With a token (an administrator's, so every route answers), as a shared server runs;
# SPOOL_CONTRACT_TOKEN=0 runs without one (auth: auto on loopback with no token).
auth=()
if [ "${SPOOL_CONTRACT_TOKEN:-1}" != 0 ]; then
    token=$("$spool" token create --data-dir "$data" --name contract --admin | tail -1) \
        || { echo "contract: spool token create failed" >&2; exit 2; }
    auth=(--header "Authorization: Bearer $token")
fi
. "$here/../lib/spool-server.sh"
cleanup() {
    spool_stop 20   # SIGTERM is a graceful shutdown; SIGKILL if it takes more than 20 s
    rm -rf "$work"
}
trap cleanup EXIT
spool_start contract "$work" "$spool" --data-dir "$data" --config "$here/config.json" --gpus none
echo "contract: spool (pid $server) at $url"

seed=()
[ -n "${SPOOL_CONTRACT_SEED:-}" ] && seed=(--seed "$SPOOL_CONTRACT_SEED")
start=$SECONDS
cd "$work"   # schemathesis writes nothing into the checkout
timeout --kill-after=10 "${SPOOL_CONTRACT_TIME_LIMIT:-240}" \
    python3 -m schemathesis.cli --config-file "$here/schemathesis.toml" run "$url/openapi.json" \
        --checks all --max-examples "${SPOOL_CONTRACT_EXAMPLES:-30}" ${seed[@]+"${seed[@]}"} ${auth[@]+"${auth[@]}"} \
        --workers 1 --generation-database none --no-color
status=$?
echo "contract: schemathesis exited $status after $((SECONDS - start)) s"
if ! kill -0 "$server" 2>/dev/null; then
    echo "contract: the server died during the run:" >&2
    tail -40 "$work/stderr" >&2
    [ "$status" -eq 0 ] && status=1
fi
if [ "$status" -ne 0 ]; then
    echo "contract: the server's last log lines:" >&2
    tail -15 "$work/stderr" >&2
fi
if grep -q "unexpected error" "$work/stderr"; then
    echo "contract: the server logged unexpected errors:" >&2
    grep "unexpected error" "$work/stderr" | sort | uniq -c | head -20 >&2
fi
exit "$status"
