# Helpers shared by the benchmark scripts; source it after setting RESULTS (the results
# file, one line per measured run) and NICE (niceness of every measured process).

# measure ROUND NAME COMMAND...: runs COMMAND and appends "ROUND NAME wall-s peak-RSS-KiB
# user-s sys-s JSON" to $RESULTS (JSON: the last line of its stdout starting with "{",
# or "-"); a failure prints its stderr and ends the benchmark.
measure() { # round name command...: wall s, peak RSS KiB, CPU s, and the JSON line it printed
    local round=$1 name=$2
    shift 2
    if /usr/bin/time -f '%e %M %U %S' -o "$RESULTS.t" nice -n "$NICE" "$@" >"$RESULTS.o" 2>"$RESULTS.e"; then
        local json
        json=$(grep '^{' "$RESULTS.o" | tail -n1 | tr -d ' ' || true)
        echo "$round $name $(cat "$RESULTS.t") ${json:--}" >>"$RESULTS"
    else
        echo "== $name failed:" >&2
        cat "$RESULTS.e" >&2
        exit 1
    fi
}
