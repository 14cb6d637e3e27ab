#!/bin/sh
# Runs every check the project has: formatting, clippy, unit and integration tests
# (the integration tests start the real berth binary and drive it with the real kubectl).
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace -- --test-threads 4
