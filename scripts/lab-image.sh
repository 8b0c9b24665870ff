#!/usr/bin/env bash
# Build the image whose containers stand in for hosts in the lab and in Molecule scenarios.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${LAB_HOST_IMAGE:-apptive-lab-host:bookworm}
bash scripts/ensure-docker.sh
bash scripts/base-image.sh
docker build -q -t "$image" lab/host-image >/dev/null
printf 'lab-image: %s ready\n' "$image" >&2
