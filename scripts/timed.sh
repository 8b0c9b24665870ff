#!/usr/bin/env bash
# Runs a command and records how long it took in $TIMED_RECORD; `timed.sh --summary` prints
# the table, so a slow or failed `make test` says where its time went.
set -uo pipefail
record=${TIMED_RECORD:-.cache/timings.txt}
mkdir -p "$(dirname "$record")"
if [ "${1:-}" = "--summary" ]; then
  [ -f "$record" ] || exit 0
  printf '\n%-28s %8s  %s\n' "part" "seconds" "result"
  cat "$record"
  exit 0
fi
name=$1
shift
start=$(date +%s)
printf '\n==> %s\n' "$name" >&2
"$@"
rc=$?
elapsed=$(($(date +%s) - start))
result=$([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)")
printf '%-28s %8s  %s\n' "$name" "$elapsed" "$result" >>"$record"
printf '<== %s: %ss, %s\n' "$name" "$elapsed" "$result" >&2
exit $rc
