# Sourced by .ci/run and tests/executors/in_private_network.sh: start_pg starts a throw-away
# PostgreSQL on 127.0.0.1:54329 when the server binaries are here (installing them first when
# run as root with apt-get) and exports TIDIAN_TEST_POSTGRES; stop_pg removes it.
pg_dir=""

stop_pg() {
  if [ -n "$pg_dir" ] && [ -f "$pg_dir/data/postmaster.pid" ]; then
    su postgres -c "$PGBIN/pg_ctl -D $pg_dir/data -m fast -w stop" >/dev/null 2>&1 || true
  fi
  [ -n "$pg_dir" ] && rm -rf "$pg_dir"
  pg_dir=""
}

start_pg() {
  local install="${1:-install}"
  if [ "$install" = install ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
      apt-get update -qq >/dev/null && apt-get install -y -qq postgresql >/dev/null
    fi
  fi
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$PGBIN" ] && [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1 || return 1
  pg_dir=$(mktemp -d)
  chown postgres "$pg_dir"
  su postgres -c "$PGBIN/initdb -D $pg_dir/data -A trust -U tidian" >/dev/null
  su postgres -c "$PGBIN/pg_ctl -D $pg_dir/data -l $pg_dir/log -w start \
    -o '-h 127.0.0.1 -p 54329 -k $pg_dir'" >/dev/null
  export TIDIAN_TEST_POSTGRES="postgresql://tidian@127.0.0.1:54329/postgres"
}
