#!/usr/bin/env bash
# Pack what the GPU machine needs for `bench device` into one file under the device tool's
# carry limit (64 MiB): the CUDA build (scripts/build-cuda.sh; stripped) and the fixture photos
# the Inception parity uses. The Inception weights (87 MB) do not fit beside it: the check runs
# with --random-inception (parity and throughput need only the architecture).
#   scripts/pack-device-check.sh   →  dist/device-check.tar.xz   (then: scripts/device-check.sh there)
set -euo pipefail
HERE="$(cd "$(dirname "$0")/.." && pwd)"
"$HERE/scripts/build-cuda.sh"   # cargo rebuilds only what changed
STAGE="$HERE/target-cuda/device-check"
rm -rf "$STAGE" && mkdir -p "$STAGE/fixtures/fid"
cp -a "$HERE/dist/adt-bench-cuda" "$STAGE/"
cp -a "$HERE/../shared/fixtures/fid/images" "$STAGE/fixtures/fid/"
tar -C "$STAGE" -cf - adt-bench-cuda fixtures | xz -T0 -6 > "$HERE/dist/device-check.tar.xz"
ls -la "$HERE/dist/device-check.tar.xz"
