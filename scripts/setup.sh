#!/bin/sh
# Installs what berth, its tests and benchmarks need on a fresh Debian machine (idempotent).
set -eu
need=""
for pair in curl:curl sqlite3:sqlite3 etcd:etcd-server kubectl:kubectl hyperfine:hyperfine; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || need="$need $pkg"
done
if [ -n "$need" ]; then
    echo "setup: installing$need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq $need >/dev/null
fi
# The official Python client, for the client compatibility tests.
python3 -c "import kubernetes" 2>/dev/null || python3 -m pip install -q kubernetes

# Debian's etcd-server starts a system etcd on the default ports; berth's benchmark runs its
# own on other ports, so the system one is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl stop etcd || true
fi
