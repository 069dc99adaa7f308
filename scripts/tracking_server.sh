#!/usr/bin/env bash
# An MLflow tracking server on PostgreSQL, with proxied artifacts, for this checkout.
#
#   scripts/tracking_server.sh start    # first use: creates the cluster + database; waits until ready
#   scripts/tracking_server.sh stop     # stops both, by PID
#   scripts/tracking_server.sh status
#   export MLFLOW_TRACKING_URI=http://127.0.0.1:5000   # then every entry point logs there
#
# Everything lives under $SERVICES_DIR (default .services/, git-ignored):
#   postgres/data  postgres/postgres.log      the cluster and its log
#   pgpass                                   the database password (mode 600; libpq reads it via PGPASSFILE)
#   mlflow/artifacts  mlflow/server.log  mlflow/server.pid
#
# PostgreSQL refuses to run as root. Run as root (CI), the cluster runs as the unprivileged $PG_OS_USER
# (default `postgres`, created by the PostgreSQL package); $SERVICES_DIR must then be reachable by it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SERVICES_DIR=${SERVICES_DIR:-$ROOT/.services}
PG_PORT=${PG_PORT:-5433}                 # not 5432: leave a system PostgreSQL alone
PG_OS_USER=${PG_OS_USER:-postgres}
MLFLOW_HOST=${MLFLOW_HOST:-127.0.0.1}    # 0.0.0.0 to share it; add --allowed-hosts to MLFLOW_SERVER_OPTS
MLFLOW_PORT=${MLFLOW_PORT:-5000}
MLFLOW_WORKERS=${MLFLOW_WORKERS:-2}      # uvicorn workers; ~150 MB each
MLFLOW_BIN=${MLFLOW_BIN:-$ROOT/.venv/bin/mlflow}
MLFLOW_SERVER_OPTS=${MLFLOW_SERVER_OPTS:-}
READY_TIMEOUT=${READY_TIMEOUT:-180}      # the first start runs MLflow's schema migrations (~30 s on 2 cores)

PG_DIR=$SERVICES_DIR/postgres
DATA=$PG_DIR/data
PGPASS=$SERVICES_DIR/pgpass
ML_DIR=$SERVICES_DIR/mlflow
PID_FILE=$ML_DIR/server.pid
DB_USER=mlflow
DB_NAME=mlflow
URL="http://$MLFLOW_HOST:$MLFLOW_PORT"
[ "$MLFLOW_HOST" = 0.0.0.0 ] && URL="http://127.0.0.1:$MLFLOW_PORT"

# Debian keeps the server binaries off PATH; take the newest installed major version.
if ! command -v initdb >/dev/null; then
  PG_BINDIR=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  [ -n "$PG_BINDIR" ] || { echo "PostgreSQL server binaries (initdb, pg_ctl) not found" >&2; exit 1; }
  PATH=$PG_BINDIR:$PATH
fi

as_pg() {  # run a PostgreSQL server command as an unprivileged user
  if [ "$(id -u)" = 0 ]; then runuser -u "$PG_OS_USER" -- "$@"; else "$@"; fi
}

init_cluster() {
  [ -f "$DATA/PG_VERSION" ] && return
  mkdir -p "$PG_DIR" "$ML_DIR/artifacts"
  if [ "$(id -u)" = 0 ]; then
    id "$PG_OS_USER" >/dev/null 2>&1 || { echo "no user $PG_OS_USER to run PostgreSQL as (set PG_OS_USER)" >&2; exit 1; }
    chmod 711 "$SERVICES_DIR"  # traversable, not listable, by the server's user
    chown "$PG_OS_USER" "$PG_DIR"
    runuser -u "$PG_OS_USER" -- test -w "$PG_DIR" || {
      echo "$PG_OS_USER cannot reach $PG_DIR (a parent directory is private); set SERVICES_DIR elsewhere" >&2
      exit 1
    }
  fi
  local password pwfile
  password=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  pwfile=$PG_DIR/.pw
  (umask 077 && printf '%s\n' "$password" >"$pwfile")
  [ "$(id -u)" = 0 ] && chown "$PG_OS_USER" "$pwfile"
  as_pg initdb -D "$DATA" -U "$DB_USER" --pwfile="$pwfile" --auth=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; rm -f "$pwfile"; exit 1; }
  rm -f "$pwfile"
  # Loopback TCP only: no Unix socket directory to own, and nothing reachable from outside.
  printf "\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n" | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
  (umask 077 && printf '127.0.0.1:*:*:%s:%s\n' "$DB_USER" "$password" >"$PGPASS")
  echo "created PostgreSQL cluster in $DATA"
}

start_postgres() {
  if as_pg pg_ctl -D "$DATA" status >/dev/null 2>&1; then return; fi
  as_pg pg_ctl -D "$DATA" -l "$PG_DIR/postgres.log" -o "-p $PG_PORT" -w -t 60 start >/dev/null
  export PGPASSFILE=$PGPASS
  if ! psql -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
    createdb -h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" "$DB_NAME"
    echo "created database $DB_NAME"
  fi
}

server_pid() {  # the running server's PID, or nothing
  [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null && cat "$PID_FILE"
  return 0
}

start_mlflow() {
  [ -n "$(server_pid)" ] && { echo "MLflow server already running (pid $(server_pid)) at $URL"; return; }
  # The password stays in the pgpass file: never in the URI, so never in `ps` or the server's log.
  # setsid: the server and its workers form one process group, whose id is the PID we record.
  # LiteLLM (imported by the server's job runner) would otherwise try to download its price map for ~7 s.
  # shellcheck disable=SC2086  # MLFLOW_SERVER_OPTS is a list of options
  PGPASSFILE=$PGPASS LITELLM_LOCAL_MODEL_COST_MAP=${LITELLM_LOCAL_MODEL_COST_MAP:-True} setsid "$MLFLOW_BIN" server \
    --backend-store-uri "postgresql://$DB_USER@127.0.0.1:$PG_PORT/$DB_NAME" \
    --artifacts-destination "$ML_DIR/artifacts" --serve-artifacts \
    --host "$MLFLOW_HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS" $MLFLOW_SERVER_OPTS \
    >>"$ML_DIR/server.log" 2>&1 </dev/null &
  echo $! >"$PID_FILE"
  local deadline=$((SECONDS + READY_TIMEOUT))
  until curl -sf "$URL/health" >/dev/null 2>&1; do
    if [ -z "$(server_pid)" ] || [ $SECONDS -ge $deadline ]; then
      echo "MLflow server did not become ready; last lines of $ML_DIR/server.log:" >&2
      tail -20 "$ML_DIR/server.log" >&2
      stop_mlflow
      exit 1
    fi
    sleep 0.5
  done
  echo "MLflow server ready at $URL (pid $(cat "$PID_FILE"), log $ML_DIR/server.log)"
}

stop_mlflow() {
  local pid
  pid=$(server_pid)
  if [ -n "$pid" ]; then
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "stopped MLflow server (pid $pid)"
  fi
  rm -f "$PID_FILE"
}

stop_postgres() {
  [ -f "$DATA/postmaster.pid" ] || return 0
  as_pg pg_ctl -D "$DATA" -m fast -w stop >/dev/null && echo "stopped PostgreSQL"
}

case "${1:-}" in
  start)
    mkdir -p "$ML_DIR/artifacts"
    init_cluster
    start_postgres
    start_mlflow
    ;;
  stop)
    stop_mlflow
    stop_postgres
    ;;
  status)
    if [ -f "$DATA/PG_VERSION" ] && as_pg pg_ctl -D "$DATA" status >/dev/null 2>&1; then
      echo "PostgreSQL: running on 127.0.0.1:$PG_PORT"
    else
      echo "PostgreSQL: stopped"
    fi
    pid=$(server_pid)
    if [ -n "$pid" ]; then echo "MLflow server: running at $URL (pid $pid)"; else echo "MLflow server: stopped"; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
