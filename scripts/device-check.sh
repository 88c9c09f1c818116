#!/usr/bin/env bash
# On the GPU machine (the device tool runs this from the repository root, $OUT set): unpack
# dist/device-check.tar.xz (scripts/pack-device-check.sh) and run the device check through the
# launcher; the summary lands in $OUT/device-check/device-check.json.
set -euo pipefail
OUT="${OUT:-$PWD/runs}"
WORK="${TMPDIR:-/tmp}/adt-device-check"
rm -rf "$WORK" && mkdir -p "$WORK"
tar -C "$WORK" -xJf dist/device-check.tar.xz
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
"$WORK/adt-bench-cuda/adt-bench-cuda" bench device --device cuda:0 \
  --fixtures "$WORK/fixtures" --random-inception --out "$OUT/device-check" "$@"
