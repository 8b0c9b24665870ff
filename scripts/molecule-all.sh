#!/usr/bin/env bash
# Runs Molecule scenarios, a few at a time: they spend most of their time waiting on apt and
# on `docker exec`, not on the CPU. Each scenario's output goes to .cache/molecule-<name>.log
# and is printed in full when it fails.
#   scripts/molecule-all.sh [scenario ...]     (default: every scenario but shared/)
set -uo pipefail
cd "$(dirname "$0")/.."

jobs=${MOLECULE_JOBS:-3}
venv=${VENV:-.venv}
mkdir -p .cache
if [ $# -gt 0 ]; then
  scenarios=("$@")
else
  mapfile -t scenarios < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -n1 basename | sort)
fi

run_one() {
  local scenario=$1 start rc
  start=$(date +%s)
  "$venv/bin/molecule" test -s "$scenario" >".cache/molecule-$scenario.log" 2>&1
  rc=$?
  printf '%s %s %s\n' "$scenario" "$rc" "$(($(date +%s) - start))" >>".cache/molecule-results"
  printf 'molecule %-16s %s in %ss\n' "$scenario" "$([ $rc -eq 0 ] && echo passed || echo FAILED)" \
    "$(($(date +%s) - start))" >&2
}

rm -f .cache/molecule-results
running=0
for scenario in "${scenarios[@]}"; do
  run_one "$scenario" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

failed=0
while read -r scenario rc seconds; do
  if [ "$rc" -ne 0 ]; then
    failed=$((failed + 1))
    printf '\n===== molecule %s failed (exit %s, %ss); its log:\n' "$scenario" "$rc" "$seconds"
    cat ".cache/molecule-$scenario.log"
  fi
done <.cache/molecule-results
printf '\nmolecule: %d scenario(s), %d failed\n' "${#scenarios[@]}" "$failed"
[ "$failed" -eq 0 ]
