#!/bin/bash
# Runs one phase of a make target and keeps the time it took, so that CI's log shows where its minutes
# go (`make test` prints the table at its end, and a failing phase prints it at once).
#
#   scripts/phase.sh begin                    forget the phases of an earlier run
#   scripts/phase.sh run NAME COMMAND [ARG…]  run COMMAND as phase NAME
#   scripts/phase.sh report                   print every phase's duration and the total
set -uo pipefail
log=${SCS_EDGE_PHASES:-$(dirname "$0")/../target/phases.tsv}

report() {
    [ -e "$log" ] || return 0
    echo "== phases"
    awk -F'\t' '{ printf "%-8s %7.1f s  %s\n", $1, $2, $3; total += $2 }
        END { printf "%-8s %7.1f s  (%.1f min)\n", "total", total, total / 60 }' "$log"
}

case ${1:-} in
begin)
    mkdir -p "$(dirname "$log")"
    : > "$log"
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
    printf '%s\t%s\t%s\n' "$name" "$seconds" "$outcome" >> "$log"
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
