#!/usr/bin/env bash
# The lab: containers on this machine standing in for the inventory's hosts, converged by
# site.yml exactly as production is.
#   scripts/lab.sh up     create/refresh the hosts, then run site.yml on them
#   scripts/lab.sh down   remove every container, volume and network the lab made
#   scripts/lab.sh info   print where to reach it
set -euo pipefail
cd "$(dirname "$0")/.."

inventory=${LAB_INVENTORY:-inventory/lab}
venv=${VENV:-.venv}
export ANSIBLE_VAULT_PASSWORD_FILE=${ANSIBLE_VAULT_PASSWORD_FILE:-$(realpath -m "$inventory")/.vault-pass}
export ANSIBLE_FORCE_COLOR=${ANSIBLE_FORCE_COLOR:-1}

ready_marker=.cache/$(basename "$inventory")-ready

log() { printf '\nlab: %s\n' "$*" >&2; }

lab_secrets() {
  # Secrets are made here, on the machine that runs the lab, and never committed.
  local vault_file=$inventory/group_vars/lb/vault.yml
  if [ ! -s "$ANSIBLE_VAULT_PASSWORD_FILE" ]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$ANSIBLE_VAULT_PASSWORD_FILE")
  fi
  if [ ! -s "$vault_file" ]; then
    printf 'vault_haproxy_stats_password: "%s"\n' "$(python3 -c 'import secrets; print(secrets.token_urlsafe(18))')" |
      "$venv/bin/ansible-vault" encrypt --output "$vault_file" - >/dev/null
    log "generated the stats password in $vault_file (ansible-vault view $vault_file)"
  fi
}

info() {
  local pass
  pass=$("$venv/bin/ansible-vault" view "$inventory/group_vars/lb/vault.yml" 2>/dev/null |
    sed -n 's/^vault_haproxy_stats_password: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p')
  cat <<EOT

The lab is up. From this machine:
  API through lb1        http://127.0.0.1:8080/api/users/42/records
  API through lb2        http://127.0.0.1:8081/api/users/42/records
  HAProxy stats (lb1)    http://127.0.0.1:8404/stats   user admin, password ${pass:-<see ansible-vault view $inventory/group_vars/lb/vault.yml>}
  HAProxy stats (lb2)    http://127.0.0.1:8405/stats
  Prometheus             http://127.0.0.1:9090
  Alertmanager           http://127.0.0.1:9093
  A host's shell         docker exec -it lab-apptive1 bash
  Tear down              make lab-down
EOT
}

case "${1:-up}" in
  up)
    bash scripts/lab-image.sh
    lab_secrets
    log "creating hosts"
    "$venv/bin/ansible-playbook" -i "$inventory" lab/up.yml
    log "converging with site.yml"
    rm -f "$ready_marker"
    # Kept for `make bench`, which sets the first converge against an idempotent rerun.
    mkdir -p .cache
    "$venv/bin/ansible-playbook" -i "$inventory" site.yml "${@:2}" 2>&1 |
      tee ".cache/$(basename "$inventory")-up.log"
    mkdir -p .cache && date -u +%FT%TZ >"$ready_marker"
    info
    ;;
  down)
    if docker info >/dev/null 2>&1; then
      "$venv/bin/ansible-playbook" -i "$inventory" lab/down.yml
    fi
    rm -f "$ready_marker"
    ;;
  info) info ;;
  *)
    echo "usage: $0 up|down|info" >&2
    exit 2
    ;;
esac
