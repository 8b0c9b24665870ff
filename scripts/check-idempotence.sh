#!/usr/bin/env bash
# Reruns site.yml on the lab and fails unless every host reports changed=0: a converged
# system must stay put, or every rollout hides real changes among noise.
set -euo pipefail
cd "$(dirname "$0")/.."
inventory=${LAB_INVENTORY:-inventory/lab}
venv=${VENV:-.venv}
export ANSIBLE_VAULT_PASSWORD_FILE=${ANSIBLE_VAULT_PASSWORD_FILE:-$(realpath -m "$inventory")/.vault-pass}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
ANSIBLE_NOCOLOR=1 "$venv/bin/ansible-playbook" -i "$inventory" site.yml "$@" | tee "$log"
changed=$(awk '/PLAY RECAP/ { recap = 1; next } recap && /changed=/ {
  for (i = 1; i <= NF; i++) if ($i ~ /^changed=/) { split($i, kv, "="); if (kv[2] > 0) print $1 " changed=" kv[2] } }' "$log")
if [ -n "$changed" ]; then
  printf '\nidempotence: the rerun changed something:\n%s\n' "$changed" >&2
  grep -E '^(changed|TASK)' "$log" | grep -B1 '^changed' >&2 || true
  exit 1
fi
echo "idempotence: second run of site.yml changed nothing"
