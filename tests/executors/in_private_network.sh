#!/usr/bin/env bash
# The cluster tests' world: run inside a fresh network namespace (`unshare --net bash THIS
# COMMAND...`), where loopback is the only interface, so Ray's servers — which listen on every
# interface — can reach nothing but 127.0.0.1. Brings loopback up, starts a throw-away
# PostgreSQL on 127.0.0.1:54329 when it can (multi-node pipelines need a shared ledger), runs
# the command, and stops the server.
set -euo pipefail
ip link set lo up
# shellcheck source=../postgres.sh
source "$(dirname "$0")/../postgres.sh"
trap stop_pg EXIT
start_pg noinstall || echo "no PostgreSQL here: the multi-node pipeline tests need one" >&2
"$@"
