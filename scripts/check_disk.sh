#!/usr/bin/env bash
# Fails early, with the figures, when the disk that holds the build is nearly full: a build that
# runs out of space fails minutes later with an error about some archive, and a test peer that
# builds its own code (cargo lambda watch) only times out.
#
#   scripts/check_disk.sh [DIR]   # DIR: where the build writes, default the target directory
set -euo pipefail
cd "$(dirname "$0")/.."

need_gib="${ACCORD_MIN_FREE_GIB:-10}"
dir="${1:-${CARGO_TARGET_DIR:-target}}"
probe="$dir"
while [ ! -d "$probe" ]; do probe="$(dirname "$probe")"; done
free_gib=$(( $(df -Pk "$probe" | awk 'NR == 2 { print $4 }') / 1024 / 1024 ))
if [ "$free_gib" -lt "$need_gib" ]; then
  echo "only ${free_gib} GiB free on the disk of $dir; the build and the suite need ${need_gib} GiB" >&2
  echo "(a cold CI build of the workspace, its tests and the plugins takes about 6 GiB, and incremental caches more; free space, or set ACCORD_MIN_FREE_GIB)" >&2
  exit 1
fi
echo "==> ${free_gib} GiB free for $dir"
