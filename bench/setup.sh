#!/usr/bin/env bash
# bench/setup.sh - installs what `make bench` needs beyond `make build`: wrk, pgbench, a C compiler and the peer drivers.
#
# Run by `make bench` only, never by `make test`. Debian packages are checked with dpkg-query /
# command -v and apt-get runs only when one is missing; the peers are the optional dependency
# group `bench` of pyproject.toml, installed into the project's virtual environment with pip when
# that group changed since the last successful install (a hash of it is kept in the venv).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=${KEEL_VENV:-.venv}
PY="$VENV/bin/python"

say() { printf 'bench/setup: %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

# wrk drives workload 7; pgbench and cc with libsqlite3's headers build and run the floors. Debian
# 12 ships pgbench with the server (postgresql-NN), which scripts/services has normally installed.
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v pgbench >/dev/null 2>&1 || missing+=(postgresql)
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
[ "$(dpkg-query -W -f='${db:Status-Status}' libsqlite3-dev 2>/dev/null)" = installed ] ||
    missing+=(libsqlite3-dev)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

# The requirement list of the `bench` group, read from pyproject.toml (the one source of truth).
mapfile -t requirements < <("$PY" - <<'EOF'
import tomllib
with open("pyproject.toml", "rb") as f:
    for req in tomllib.load(f)["project"]["optional-dependencies"]["bench"]:
        print(req)
EOF
)
stamp="$VENV/.keel-bench-requirements.sha256"
want=$(printf '%s\n' "${requirements[@]}" | sha256sum | cut -d' ' -f1)
have=""
[ -f "$stamp" ] && have=$(cat "$stamp")
if [ "$want" != "$have" ]; then
    say "installing the peer drivers into $VENV: ${requirements[*]}"
    "$PY" -m pip install -q --disable-pip-version-check "${requirements[@]}"
    printf '%s\n' "$want" >"$stamp"
fi
