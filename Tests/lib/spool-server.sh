# Sourced by the shell test runners (Tests/contract/run.sh, Tests/openapi-generator/run.sh):
# start `spool serve` on a free loopback port and stop it by PID.
#
#   spool_start LABEL WORKDIR SPOOL [serve arguments…]
#       Starts SPOOL serve --host 127.0.0.1 --port 0 with the arguments, its output in
#       WORKDIR/stdout and WORKDIR/stderr; sets $server (its PID) and $url (http://127.0.0.1:PORT)
#       once it prints its listening line. Exits 2 if it dies first or says nothing in 30 s.
#   spool_stop [GRACE]
#       SIGTERM (a graceful shutdown), then SIGKILL after GRACE seconds (default 20).

server=
url=

spool_start() {
    local label=$1 work=$2 spool=$3
    shift 3
    "$spool" serve --host 127.0.0.1 --port 0 "$@" >"$work/stdout" 2>"$work/stderr" </dev/null &
    server=$!
    for _ in $(seq 1 300); do
        url=$(sed -n 's|^spool: listening on \(http://127\.0\.0\.1:[0-9][0-9]*\)$|\1|p' "$work/stdout")
        [ -n "$url" ] && return 0
        if ! kill -0 "$server" 2>/dev/null; then
            echo "$label: the server exited before listening:" >&2
            cat "$work/stderr" >&2
            exit 2
        fi
        sleep 0.1   # polling another process's output: there is no event to wait on
    done
    echo "$label: no 'listening on' line within 30 s" >&2
    tail -20 "$work/stderr" >&2
    exit 2
}

spool_stop() {
    local grace=${1:-20}
    if [ -n "$server" ] && kill "$server" 2>/dev/null; then
        for _ in $(seq 1 $((grace * 10))); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$server" 2>/dev/null
        wait "$server" 2>/dev/null
    fi
}
