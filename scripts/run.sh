#!/bin/sh
# Builds berth and runs a single-node cluster: `berth server` with its embedded defaults.
# The kubeconfig path is printed on start (default /var/lib/berth/kubeconfig.yaml).
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --release --bin berth
exec target/release/berth server "$@"
