#!/usr/bin/env bash
# Makes (once) the venv with IPA from PyPI that the benchmarks run IPA's own code in, and
# prints its python. Shared by stream.sh, startup.sh and erase.sh.
#   PY=$(bash bench/ipa-venv.sh)
# IRA_CACHE (default /var/tmp/ira-cache) keeps it between runs; delete it to start over.
set -euo pipefail
IRA_CACHE=${IRA_CACHE:-/var/tmp/ira-cache}
VENV=$IRA_CACHE/ipa-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import ironic_python_agent' 2>/dev/null; then
    mkdir -p "$IRA_CACHE"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install -q ironic-python-agent >&2
fi
echo "$VENV/bin/python"
