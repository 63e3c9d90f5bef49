#!/usr/bin/env bash
# ormsync against PostgreSQL's native logical replication, on the same pair of clusters in
# the same run.
#
#   sudo benches/compare_logical.sh                         # N = 20000
#   sudo ORMSYNC_BENCH_ROWS=200000 benches/compare_logical.sh
#   sudo ORMSYNC_BENCH_CEILING_CLIENTS=1,2,4 benches/compare_logical.sh   # also the ceiling
#                                       # with 2 and 4 clients at once, against native
#   sudo ORMSYNC_BENCH_APPLY_CONNECTIONS=2 ORMSYNC_BENCH_CEILING_CLIENTS=1,2 \
#       benches/compare_logical.sh      # ormsync applying through 2 connections, against
#                                       # the ceiling with 2 clients
#
# Creates two throwaway PostgreSQL clusters with pg_createcluster (a publisher with
# wal_level=logical and a subscriber, on free ports from 5433 up; the machine's own
# clusters are never touched or restarted), then:
#
#  1. native logical replication: a table, a publication, a subscription created disabled
#     with copy_data=false; N inserts written at the publisher in 1,000-row transactions;
#     the subscription enabled and timed until the last row is at the subscriber (it
#     applies in commit order, so every earlier row is there too); the same for N updates
#     of those rows, each subscription disabled while the backlog is written;
#  2. ormsync: `cargo bench --bench ship` for postgres-postgres with its source database on
#     the publisher cluster and its destination on the subscriber cluster, which does the
#     same (a backlog of N captured inserts, then of N updates, each timed from
#     `Replicator::start` to the return of `sync_now`) and measures its own ceiling.
#
# Prints rows/s of each and the ratio ormsync/logical. Both clusters are dropped on exit,
# also after a failure or Ctrl-C. Exits non-zero when a figure could not be measured.
#
# Needs: Debian/Ubuntu PostgreSQL packages (pg_createcluster), cargo, and root (the clusters
# are created and dropped as root, as pg_createcluster requires, owned by and started as
# user postgres through runuser).
set -euo pipefail

cd "$(dirname "$0")/.."

log() { echo "compare_logical: $*" >&2; }
die() {
    log "$*"
    exit 1
}

[ "$(id -u)" = 0 ] || die "run as root (it creates and drops PostgreSQL clusters)"
for cmd in pg_createcluster pg_ctlcluster pg_dropcluster pg_lsclusters psql runuser cargo; do
    command -v "$cmd" >/dev/null || die "\`$cmd\` not found (needs the postgresql-common packages and cargo)"
done

N=${ORMSYNC_BENCH_ROWS:-20000}
N=${N//_/}
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -ge 1000 ] || die "ORMSYNC_BENCH_ROWS must be a number >= 1000, got '$N'"
CHUNK=1000
# Generous: the slowest figure seen is well under 1,000 rows/s on a busy machine.
TIMEOUT_S=$((600 + N / 100))

VERSION=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null |
    awk -F/ '{print $5}' | sort -V | tail -n 1)
[ -n "$VERSION" ] || die "no PostgreSQL server binaries under /usr/lib/postgresql"

WORK=$(mktemp -d /tmp/ormsync-compare.XXXXXX)
chmod 755 "$WORK"
PUB=ormsync_pub_$$
SUB=ormsync_sub_$$
CREATED=()

# pg_createcluster and pg_dropcluster need root (they write /etc/postgresql and
# /var/lib/postgresql, then hand the cluster to user postgres); the server itself is
# started as its owner.
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

cleanup() {
    local rc=$?
    for ((i = ${#CREATED[@]} - 1; i >= 0; i--)); do
        log "dropping cluster ${CREATED[i]}"
        pg_lsclusters -h "$VERSION" "${CREATED[i]}" >/dev/null 2>&1 || continue
        pg_dropcluster --stop "$VERSION" "${CREATED[i]}" >/dev/null 2>&1 ||
            log "could not drop cluster ${CREATED[i]}: run pg_dropcluster --stop $VERSION ${CREATED[i]}"
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A TCP port nobody listens on and no cluster is configured for.
taken_ports=$(pg_lsclusters -h | awk '{print $3}')
free_port() {
    local p=$1
    while :; do
        if ! grep -qx "$p" <<<"$taken_ports" && ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
        p=$((p + 1))
    done
}

# psql as user postgres over TCP (the clusters trust 127.0.0.1).
psql_at() {
    local port=$1 db=$2
    shift 2
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d "$db" "$@"
}

make_cluster() {
    local name=$1 port=$2
    shift 2
    log "creating PostgreSQL $VERSION cluster $name on port $port $*"
    CREATED+=("$name")
    pg_createcluster "$VERSION" "$name" -p "$port" --start-conf=manual \
        "$@" -- --auth-host=trust --auth-local=peer \
        >"$WORK/create_$name.log" 2>&1 || {
        cat "$WORK/create_$name.log" >&2
        die "pg_createcluster $name failed"
    }
    as_postgres pg_ctlcluster --skip-systemctl-redirect "$VERSION" "$name" start ||
        die "could not start cluster $name"
    for _ in $(seq 60); do
        psql_at "$port" postgres -tAc 'SELECT 1' >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "cluster $name did not accept connections within 60 s"
}

# --- Build first, so compiling is not mixed with the clusters' lifetime -------------------
log "building the ship bench"
cargo bench --bench ship --no-run >"$WORK/build.log" 2>&1 || {
    tail -n 40 "$WORK/build.log" >&2
    die "cargo bench --bench ship --no-run failed"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
PUB_PORT=$(free_port 5433)
SUB_PORT=$(free_port $((PUB_PORT + 1)))
make_cluster "$PUB" "$PUB_PORT" -o wal_level=logical
# The launcher waits wal_retrieve_retry_interval (default 5 s) before it starts an apply
# worker again after the last start: without this, every figure after the first re-enable
# would include up to 5 s of that wait instead of replication.
make_cluster "$SUB" "$SUB_PORT" -o wal_retrieve_retry_interval=50ms
[ "$(psql_at "$PUB_PORT" postgres -tAc 'SHOW wal_level')" = logical ] ||
    die "the publisher cluster did not come up with wal_level=logical"

# --- 1. Native logical replication ------------------------------------------------------
# The table of benches/common/mod.rs (`ddl`, PostgreSQL), and the same row values as its
# `captured_row` and `captured_update(id, 1)`.
DDL='CREATE TABLE bench_rows (id BIGINT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,
     balance NUMERIC(20,4) NOT NULL, created_at TIMESTAMPTZ NOT NULL, uid UUID NOT NULL,
     note TEXT NULL, qty INTEGER NOT NULL, active BOOLEAN NOT NULL)'
for port in "$PUB_PORT" "$SUB_PORT"; do
    psql_at "$port" postgres -c 'CREATE DATABASE bench'
    psql_at "$port" bench -c "$DDL"
done
psql_at "$PUB_PORT" bench -c 'CREATE PUBLICATION ormsync_bench FOR TABLE bench_rows'
# Created disabled: the slot exists from here on, so every later write is retained for it.
psql_at "$SUB_PORT" bench -c "CREATE SUBSCRIPTION ormsync_bench
    CONNECTION 'host=127.0.0.1 port=$PUB_PORT user=postgres dbname=bench'
    PUBLICATION ormsync_bench WITH (copy_data = false, enabled = false)"

# Disables the subscription and waits until its apply worker has exited.
disable_subscription() {
    psql_at "$SUB_PORT" bench -c 'ALTER SUBSCRIPTION ormsync_bench DISABLE'
    for _ in $(seq 300); do
        [ "$(psql_at "$SUB_PORT" bench -tAc "SELECT count(*) FROM pg_stat_subscription
            WHERE subname = 'ormsync_bench' AND pid IS NOT NULL")" = 0 ] && return 0
        sleep 0.1
    done
    die "the subscription's apply worker did not stop"
}

# Writes N inserts (op=insert) or updates (op=update) at the publisher, 1,000 a transaction.
write_backlog() {
    local op=$1 sql="$WORK/$1.sql" a b
    : >"$sql"
    for ((a = 1; a <= N; a += CHUNK)); do
        b=$((a + CHUNK - 1 < N ? a + CHUNK - 1 : N))
        if [ "$op" = insert ]; then
            echo "BEGIN; INSERT INTO bench_rows SELECT g, 'customer ' || g, 'customer' || g || '@example.com',
                ((g * 137) % 10000000) / 100.0, to_timestamp(1700000000 + g),
                ('6f726d73796e6300' || lpad(to_hex(g), 16, '0'))::uuid,
                CASE WHEN g % 2 = 0 THEN 'note of ' || g END, g % 100, g % 3 <> 0
                FROM generate_series($a, $b) AS g; COMMIT;" >>"$sql"
        else
            echo "BEGIN; UPDATE bench_rows SET balance = ((id * 137 + 1) % 10000000) / 100.0,
                note = 'updated 1', qty = (id + 1) % 100 WHERE id BETWEEN $a AND $b; COMMIT;" >>"$sql"
        fi
    done
    psql_at "$PUB_PORT" bench -f "$sql" >/dev/null
}

# Enables the subscription and prints the seconds until `$1` (a condition on the last row)
# holds at the subscriber; the clock is the subscriber's, in one session.
time_catch_up() {
    local done_when=$1
    psql_at "$SUB_PORT" bench -tA <<SQL
SELECT extract(epoch FROM clock_timestamp()) AS t0 \gset
ALTER SUBSCRIPTION ormsync_bench ENABLE;
DO \$\$
DECLARE deadline timestamptz := clock_timestamp() + interval '$TIMEOUT_S seconds';
BEGIN
    WHILE NOT EXISTS (SELECT 1 FROM bench_rows WHERE $done_when) LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'the subscriber did not catch up within $TIMEOUT_S s';
        END IF;
        PERFORM pg_sleep(0.005);
    END LOOP;
END
\$\$;
SELECT round((extract(epoch FROM clock_timestamp()) - :t0)::numeric, 3);
SQL
}

log "logical: writing $N inserts at the publisher"
write_backlog insert
log "logical: enabling the subscription"
LOGICAL_INSERT_S=$(time_catch_up "id = $N") || die "logical replication of the inserts failed"
n=$(psql_at "$SUB_PORT" bench -tAc 'SELECT count(*) FROM bench_rows')
[ "$n" = "$N" ] || die "the subscriber has $n rows after catching up, expected $N"

disable_subscription
log "logical: writing $N updates at the publisher"
write_backlog update
log "logical: enabling the subscription"
LOGICAL_UPDATE_S=$(time_catch_up "id = $N AND note = 'updated 1'") ||
    die "logical replication of the updates failed"
n=$(psql_at "$SUB_PORT" bench -tAc "SELECT count(*) FROM bench_rows WHERE note = 'updated 1'")
[ "$n" = "$N" ] || die "the subscriber has $n updated rows after catching up, expected $N"

# Out of ormsync's way: dropping the subscription drops its slot at the publisher.
psql_at "$SUB_PORT" bench -c 'DROP SUBSCRIPTION ormsync_bench'
psql_at "$PUB_PORT" postgres -c 'DROP DATABASE bench'
psql_at "$SUB_PORT" postgres -c 'DROP DATABASE bench'

# --- 2. ormsync on the same clusters ------------------------------------------------------
log "ormsync: cargo bench --bench ship (postgres-postgres, N = $N)"
ORMSYNC_BENCH_ROWS=$N \
    ORMSYNC_BENCH_SCENARIOS=postgres-postgres \
    ORMSYNC_BENCH_SOURCE_URL="postgres://postgres@127.0.0.1:$PUB_PORT/postgres" \
    ORMSYNC_BENCH_DEST_URL="postgres://postgres@127.0.0.1:$SUB_PORT/postgres" \
    ORMSYNC_BENCH_REQUIRE_SERVERS=1 \
    cargo bench --bench ship 2>"$WORK/ship.err" | tee "$WORK/ship.out" >&2 || {
    cat "$WORK/ship.err" >&2
    die "the ship bench failed"
}

# `field op key`: a value from the ship bench's RESULT line of that op.
field() {
    awk -v op="$1" -v key="$2" '
        $1 == "RESULT" && $2 == "scenario=postgres-postgres" && $3 == "op=" op {
            for (i = 4; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) print kv[2] }
        }' "$WORK/ship.out"
}
for op in insert update; do
    [ -n "$(field "$op" ormsync_rows_per_s)" ] || die "the ship bench printed no $op figure"
done

echo
echo "PostgreSQL $VERSION native logical replication vs ormsync, N = $N rows, same run"
echo "publisher :$PUB_PORT (wal_level=logical) -> subscriber :$SUB_PORT; $(nproc) cores;" \
    "load average (1, 5, 15 min) $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after"
printf '%-7s %12s %12s %10s %12s %12s %16s %16s\n' op "logical s" "logical/s" "ormsync s" \
    "ormsync/s" "ceiling/s" "ormsync/logical" "ormsync/ceiling"
for op in insert update; do
    if [ "$op" = insert ]; then ls=$LOGICAL_INSERT_S; else ls=$LOGICAL_UPDATE_S; fi
    awk -v op="$op" -v n="$N" -v ls="$ls" -v os="$(field "$op" ormsync_secs)" \
        -v ce="$(field "$op" ceiling_rows_per_s)" -v ratio_c="$(field "$op" ratio)" 'BEGIN {
            printf "%-7s %12.2f %12.0f %10.2f %12.0f %12.0f %16.3f %16.3f\n",
                op, ls, n / ls, os, n / os, ce, ls / os, ratio_c
        }'
done
# The ceiling with several clients (ORMSYNC_BENCH_CEILING_CLIENTS=1,2,4), against native.
awk -v n="$N" -v li="$LOGICAL_INSERT_S" -v lu="$LOGICAL_UPDATE_S" '
    $1 == "RESULT_CEILING" && $2 == "scenario=postgres-postgres" {
        for (i = 3; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
        ls = (f["op"] == "insert") ? li : lu
        printf "%-7s ceiling with %s clients: %.0f rows/s, %.3f of native logical, %.3f of one client\n",
            f["op"], f["clients"], f["ceiling_rows_per_s"], ls / f["ceiling_secs"], f["vs_one_client"]
    }' "$WORK/ship.out"
echo
echo "RESULT_LOGICAL op=insert rows=$N logical_secs=$LOGICAL_INSERT_S"
echo "RESULT_LOGICAL op=update rows=$N logical_secs=$LOGICAL_UPDATE_S"
