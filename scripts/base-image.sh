#!/usr/bin/env bash
# Provide debian:bookworm-slim without a registry: an image already present (pulled, on a
# machine that can pull) is used as it is; otherwise it is debootstrapped from the apt mirror
# this machine's own sources name (never written into the repo) and docker-imported.
set -euo pipefail

image=${BASE_IMAGE:-debian:bookworm-slim}
suite=bookworm

log() { printf 'base-image: %s\n' "$*" >&2; }

if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi

apt_mirror() {
  local uri=""
  if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
    # deb822 stanzas: take the first URI of a stanza whose suites include the plain suite.
    uri=$(awk -v suite="$suite" '
      /^URIs:/ { uris = $2 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) { print uris; exit } }
    ' /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }' /etc/apt/sources.list)
  fi
  printf '%s' "$uri"
}

mirror=$(apt_mirror)
if [ -z "$mirror" ]; then
  log "no apt source for $suite found in /etc/apt; cannot build $image"
  exit 1
fi
command -v debootstrap >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

rootfs=$(mktemp -d /var/tmp/apptive-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
log "debootstrapping $suite (minbase) into $rootfs"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >/var/tmp/apptive-debootstrap.log 2>&1 || {
  tail -n 20 /var/tmp/apptive-debootstrap.log >&2
  exit 1
}
# Make the image behave like the official slim one: no caches, no docs, apt lists refreshed on use.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
tar -C "$rootfs" -c . | docker import \
  --change 'CMD ["bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$image" >/dev/null
docker tag "$image" debian:bookworm
log "built $image from $(printf '%s' "$mirror" | sed -E 's#^([a-z]+://).*#\1<mirror>#')"
