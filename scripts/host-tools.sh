#!/usr/bin/env bash
# Tools the tests run on this machine itself: promtool (rule unit tests, config checks) comes
# with Debian's prometheus package; debootstrap builds the base image.
set -euo pipefail

missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v debootstrap >/dev/null || missing+=(debootstrap)
[ ${#missing[@]} -eq 0 ] && exit 0

export DEBIAN_FRONTEND=noninteractive
# Only promtool is wanted: keep the package's Prometheus from starting and taking :9090,
# which the lab publishes.
policy=/usr/sbin/policy-rc.d
created_policy=false
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=true
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if $created_policy; then rm -f "$policy"; fi
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
echo "host-tools: installed ${missing[*]}" >&2
