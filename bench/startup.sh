#!/usr/bin/env bash
# Start-up and inventory benchmark, ira beside IPA in the same run.
#   RUNS=15 bash bench/startup.sh
# Installs IPA from PyPI into a cached venv ($IRA_CACHE/ipa-venv) the first time.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
IRA_CACHE=${IRA_CACHE:-/var/tmp/ira-cache}
RUNS=${RUNS:-15}
bash tests/setup.sh
cargo build --release --target x86_64-unknown-linux-musl
IRA=$REPO/target/x86_64-unknown-linux-musl/release/ira
IPA_PY=$(IRA_CACHE=$IRA_CACHE bash bench/ipa-venv.sh)
echo "== binary: $(stat -c %s "$IRA") bytes; $(file -b "$IRA" | cut -d, -f1-2)"
python3 bench/startup.py "$IRA" "$IPA_PY" "$RUNS"
echo "== inventory, whole process (hyperfine), beside lsblk on the same machine"
hyperfine -N -w 3 -r 30 "$IRA inventory --device-allowlist /dev/ira-bench-no-such-disk" \
    "$IRA inventory" "lsblk -J -b -O" 2>&1 | grep -E 'Benchmark|Time|±' || true
echo "== inventory, in process (cargo bench)"
cargo bench --bench inventory 2>&1 | grep -vE '^\s*(Compiling|Finished|Running)' || true
