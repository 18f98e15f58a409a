#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests: data in DIR, a free loopback
# port, trust authentication for user tenfold, byte-order collation, no
# fsync. `initdb` and `postgres` refuse to run as root: as root they run as
# the `postgres` user.
#   bash tests/postgres.sh start DIR    # creates and starts; prints its URL
#   bash tests/postgres.sh halt DIR     # stops it at once, keeps the data
#   bash tests/postgres.sh resume DIR   # starts it again on the same port
#   bash tests/postgres.sh stop DIR     # stops it and removes DIR
set -euo pipefail
action="$1"
dir="$2"
bin="${TENFOLD_PG_BIN:-}"
if [ -z "$bin" ]; then
    if command -v initdb >/dev/null 2>&1; then
        bin="$(dirname "$(readlink -f "$(command -v initdb)")")"
    else
        bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
    fi
fi
as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
run_server() {
    as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w start -o \
        "-p $(cat "$dir/port") -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        >/dev/null
}
case "$action" in
start)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$dir"; fi
    as_pg "$bin/initdb" -D "$dir/data" -U tenfold --auth=trust --no-sync \
        --encoding=UTF8 --locale=C >/dev/null
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' \
        | as_pg tee "$dir/port" >/dev/null
    run_server
    echo "postgres://tenfold@127.0.0.1:$(cat "$dir/port")"
    ;;
halt)
    # synchronous_commit=off acknowledges commits before their WAL is
    # written: an immediate stop may lose the last ones. The tests halt the
    # index to cut its clients off, not to lose what it acknowledged, so
    # the WAL is written out first.
    as_pg "$bin/psql" -h "$dir" -p "$(cat "$dir/port")" -U tenfold -d postgres -qAtc CHECKPOINT >/dev/null
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null
    ;;
resume) run_server ;;
stop)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
*) echo "usage: $0 start|halt|resume|stop DIR" >&2; exit 2 ;;
esac
