#!/usr/bin/env bash
# Installs (Debian packages) and starts, on loopback only, the real services the tests use, and exports their
# addresses for the test run through .ci/services.env. Idempotent: safe to run when they are already up.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_PORT=${IMAGELOOP_CI_PG_PORT:-55432}
REDIS_PORT=${IMAGELOOP_CI_REDIS_PORT:-56379}
PKGS="postgresql redis-server fonts-noto-color-emoji fonts-wqy-microhei chromium"

missing=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# PostgreSQL: a throw-away cluster owned by the postgres user, listening on 127.0.0.1 only.
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PG_DIR=/tmp/imageloop-ci-pg
if ! su postgres -c "$PG_BIN/pg_isready -h 127.0.0.1 -p $PG_PORT" >/dev/null 2>&1; then
  rm -rf "$PG_DIR"; mkdir -p "$PG_DIR"; chown postgres "$PG_DIR"
  su postgres -c "$PG_BIN/initdb -D $PG_DIR/data -A trust -U postgres >/dev/null"
  su postgres -c "$PG_BIN/pg_ctl -D $PG_DIR/data -o '-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR' -l $PG_DIR/log -w start >/dev/null"
fi
su postgres -c "psql -h 127.0.0.1 -p $PG_PORT -U postgres -tAc \"SELECT 1 FROM pg_database WHERE datname='imageloop_test'\"" | grep -q 1 \
  || su postgres -c "psql -h 127.0.0.1 -p $PG_PORT -U postgres -qc 'CREATE DATABASE imageloop_test'"

# Redis on loopback, no persistence needed for tests.
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save "" --appendonly no >/dev/null
  for _ in $(seq 1 50); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

cat > .ci/services.env <<ENV
export IMAGELOOP_TEST_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$PG_PORT/imageloop_test
export IMAGELOOP_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export IMAGELOOP_TEST_CHROMIUM=/usr/bin/chromium
ENV
echo "services: PostgreSQL on 127.0.0.1:$PG_PORT, Redis on 127.0.0.1:$REDIS_PORT"
