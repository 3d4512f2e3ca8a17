#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server for tests and try-outs, and prints its URL on stdout:
#
#     url=$(scripts/throwaway-postgres.sh [OWNER_PID])
#
# The server listens on a free loopback port with its data and socket in a new temp directory,
# runs as a non-root user (the `postgres` user when called as root; initdb refuses root), and
# trusts local connections (user `spool`, database `postgres`). fsync is off: it is throwaway
# (SPOOL_PG_DURABLE=1 keeps PostgreSQL's durable defaults, for benchmarks).
# A watchdog stops it and removes the directory when OWNER_PID exits (default: the caller).
# Finds initdb/pg_ctl on the PATH or under /usr/lib/postgresql/*/bin (Debian's layout).
set -euo pipefail

owner=${1:-$PPID}
bin=""
if command -v initdb >/dev/null 2>&1; then
  bin=$(dirname "$(command -v initdb)")
else
  for candidate in /usr/lib/postgresql/*/bin; do [ -x "$candidate/initdb" ] && bin=$candidate; done
fi
if [ -z "$bin" ]; then
  echo "throwaway-postgres: initdb not found (install PostgreSQL, e.g. apt-get install postgresql)" >&2
  exit 1
fi

dir=$(mktemp -d /tmp/spool-pg.XXXXXX)
chmod 755 "$dir"
run=()
if [ "$(id -u)" = 0 ]; then
  user=postgres
  id -u "$user" >/dev/null 2>&1 || { user=spoolpg; id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home "$user"; }
  chown "$user" "$dir"
  run=(runuser -u "$user" --)
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${run[@]}" "$bin/initdb" -D "$dir/data" -U spool --auth=trust -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 1; }
fast="-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
[ "${SPOOL_PG_DURABLE:-0}" = 1 ] && fast=""
# The suites run their tests at once, many with a small cluster of their own (each node a pool
# of connections and a listener): 300 connections were once used up (`too many clients`).
"${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start -o \
  "-c listen_addresses=127.0.0.1 -p $port -k $dir $fast -c max_connections=1000" \
  >/dev/null || { cat "$dir/server.log" >&2; exit 1; }

# The watchdog outlives this script (setsid, no inherited stdout) and stops the server once
# the owner is gone.
setsid bash -c "while kill -0 $owner 2>/dev/null; do sleep 1; done
  ${run[*]} '$bin/pg_ctl' -D '$dir/data' -m immediate stop >/dev/null 2>&1; rm -rf '$dir'" </dev/null >/dev/null 2>&1 &

echo "postgres://spool@127.0.0.1:$port/postgres"
