#!/usr/bin/env bash
# Installs the PostgreSQL server from the distribution's packages when its
# binaries are missing, for the PostgreSQL hub tests (tests/pg, tests/conformance).
# The tests start their own throwaway cluster (tests/pg_cluster.py): no service
# is started or enabled here.
set -euo pipefail
cd "$(dirname "$0")/.."
if python3 -c 'import sys; sys.path.insert(0, "tests"); import pg_cluster; sys.exit(pg_cluster.find_bin_dir() is None)'; then
    echo "== .ci/postgres.sh: PostgreSQL server present"
    exit 0
fi
echo "== .ci/postgres.sh: installing postgresql"
if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends postgresql
