#!/bin/bash
# Runs one phase of a make target and keeps the time it took, so that CI's log shows where its minutes
# go (`make test` prints the table at its end, and a failing phase prints it at once), and the disk
# left free after it: CI's disk is shared and finite, and a phase that dies of a full disk (mkosi's
# "No space left on device") should say so in the table, not only deep in its log.
#
#   scripts/phase.sh begin                    forget the phases of an earlier run
#   scripts/phase.sh run NAME COMMAND [ARG…]  run COMMAND as phase NAME
#   scripts/phase.sh report                   print every phase's duration and the total
set -uo pipefail
log=${SCS_EDGE_PHASES:-$(dirname "$0")/../target/phases.tsv}

# GiB free on the filesystem holding the log (the target directory, where builds and images go).
free_gib() {
    df --output=avail -BG "$(dirname "$log")" 2>/dev/null | awk 'NR == 2 { print $1 + 0 }'
}

report() {
    [ -e "$log" ] || return 0
    echo "== phases (disk free after each)"
    awk -F'\t' '{ printf "%-12s %7.1f s  %5s GiB  %s\n", $1, $2, $4, $3; total += $2 }
        END { printf "%-12s %7.1f s  (%.1f min)\n", "total", total, total / 60 }' "$log"
}

case ${1:-} in
begin)
    mkdir -p "$(dirname "$log")"
    : > "$log"
    echo "== $(free_gib) GiB free for target/ at the start"
    ;;
run)
    name=$2
    shift 2
    echo "== phase $name: $*"
    start=$EPOCHREALTIME
    "$@"
    status=$?
    seconds=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    outcome=$([ "$status" -eq 0 ] && echo ok || echo "failed (exit $status)")
    mkdir -p "$(dirname "$log")"
    printf '%s\t%s\t%s\t%s\n' "$name" "$seconds" "$outcome" "$(free_gib)" >> "$log"
    printf '== phase %s: %.1f s, %s\n' "$name" "$seconds" "$outcome"
    [ "$status" -eq 0 ] || report
    exit "$status"
    ;;
report)
    report
    ;;
*)
    echo "usage: $0 begin | run NAME COMMAND [ARG…] | report" >&2
    exit 2
    ;;
esac
