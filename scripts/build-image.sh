#!/usr/bin/env bash
# Build the versioned apptive-api image and save it as an archive for hosts without a registry.
#
#   scripts/build-image.sh [VERSION]      (or VERSION=1.0.1 scripts/build-image.sh)
#
# VERSION defaults to app/pyproject.toml's; an override only changes what the image reports
# (tag, label, APPTIVE_VERSION), which is how a second version is made for rollout tests.
# Wheels are built on the host because containers here cannot reach PyPI.
set -euo pipefail

log() { printf 'build-image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
app="$repo/app"
build="$repo/build"
wheels="$build/wheels"
context="$build/image-context"
dist="$repo/dist"

command -v python3 >/dev/null || die "python3 not found on the host"
[ -f "$app/pyproject.toml" ] || die "missing $app/pyproject.toml"
[ -f "$app/requirements.lock" ] || die "missing $app/requirements.lock"

pkg_version=$(python3 - "$app/pyproject.toml" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["project"]["version"])
PY
) || die "cannot read [project].version from app/pyproject.toml"

version=${1:-${VERSION:-$pkg_version}}
# Must be a valid Docker tag and a value the app accepts for APPTIVE_VERSION.
[[ $version =~ ^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$ ]] \
  || die "invalid version '$version' (allowed: letters, digits, '.', '_', '-'; max 64)"
tag="apptive-api:$version"
build_tag="apptive-api-build:cache"
archive="$dist/apptive-api-$version.tar"
revision=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)

log "version $version (package $pkg_version, revision $revision)"
bash "$repo/scripts/ensure-docker.sh" || die "no Docker Engine available"
bash "$repo/scripts/base-image.sh" || die "base image debian:bookworm-slim unavailable"

# A fresh wheelhouse every time: a stale wheel of another version must never be installed.
rm -rf "$wheels" "$context"
mkdir -p "$wheels" "$context" "$dist"
log "building wheels into ${wheels#"$repo"/}"
python3 -m pip wheel --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --requirement "$app/requirements.lock" --wheel-dir "$wheels" \
  || die "pip wheel failed for app/requirements.lock"
python3 -m pip wheel --quiet --disable-pip-version-check --no-deps \
  --wheel-dir "$wheels" "$app" \
  || die "pip wheel failed for app/"

# Debian bookworm's python3 is CPython 3.11 on this architecture: only pure-Python wheels or
# cp311 manylinux wheels can be installed there.
for whl in "$wheels"/*.whl; do
  case "$(basename "$whl")" in
    *-py3-none-any.whl | *-py2.py3-none-any.whl | *-cp311-cp311-manylinux*.whl \
      | *-cp311-abi3-manylinux*.whl | *-cp3*-abi3-manylinux*.whl) ;;
    *) die "wheel not installable in bookworm's python3.11: $(basename "$whl")" ;;
  esac
done
ls "$wheels"/apptive_api-*.whl >/dev/null 2>&1 || die "no apptive_api wheel was built"
log "$(find "$wheels" -name '*.whl' | wc -l) wheels"

cp -a "$wheels" "$context/wheels"
cp "$app/requirements.lock" "$context/wheels/requirements.lock"
cp "$app/.dockerignore" "$context/.dockerignore"

# The build stage gets a tag of its own: it is the layer cache of the next build, and a tagged
# image is not left dangling, so the prune below can only take superseded copies.
log "docker build $build_tag (build stage)"
docker build --file "$app/Dockerfile" --target build --tag "$build_tag" "$context" >&2 \
  || die "docker build of the build stage failed"
log "docker build $tag"
docker build \
  --file "$app/Dockerfile" \
  --build-arg "VERSION=$version" \
  --build-arg "REVISION=$revision" \
  --tag "$tag" \
  "$context" >&2 || die "docker build failed"

# Rebuilding a tag leaves the previous image dangling (disk is shared): drop only our own.
for label in org.opencontainers.image.title=apptive-api io.apptive.stage=build; do
  docker image prune --force --filter dangling=true --filter "label=$label" >/dev/null
done

log "docker save $tag"
tmp="$archive.tmp.$$"
trap 'rm -f "$tmp"' EXIT
docker save --output "$tmp" "$tag" || die "docker save failed"
chmod 0644 "$tmp"
mv -f "$tmp" "$archive"
trap - EXIT

printf 'image:   %s\n' "$tag"
printf 'archive: %s\n' "$archive"
