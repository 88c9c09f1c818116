#!/usr/bin/env bash
# Build the CUDA adt-bench (and the SD plugins) on a machine with neither a GPU nor a CUDA
# toolkit, from NVIDIA's PyPI wheels of the CUDA 13.0 line (the line a 580 driver runs).
# Recipe and reasons: ../shared/docs/cuda-build.md. Output: dist/adt-bench-cuda/ with the
# binary, the plugin libraries, the launcher (adt-bench-cuda) and NEEDED.txt (required libraries).
#
#   scripts/build-cuda.sh            # CUDA_COMPUTE_CAP=90 (H100/H200) by default
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh   # A100
#
# The link-only stub libcuda.so it generates lives in $WORK/cuda/lib/stubs and is never
# copied into dist/: the target's driver provides the real libcuda.so.1.
set -euo pipefail

HERE="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${ADT_CUDA_WORK:-$HERE/target-cuda/toolkit}"
CUDA="$WORK/cuda"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
PY="${PYTHON:-python3}"

WHEELS=(
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
  nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.1.0.3 nvidia-curand==10.4.0.35
)

if [ ! -x "$CUDA/bin/nvcc" ]; then
  echo "== fetching the CUDA 13.0 wheels (about 650 MB) into $WORK"
  mkdir -p "$WORK/wheels" "$WORK/unz"
  (cd "$WORK/wheels" && "$PY" -m pip download -q --no-deps --only-binary=:all: \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux2014_x86_64 --python-version 3.11 "${WHEELS[@]}")
  for w in "$WORK"/wheels/*.whl; do unzip -q -o "$w" -d "$WORK/unz"; done
  rm -rf "$CUDA"
  cp -a "$WORK/unz/nvidia/cu13" "$CUDA"
  ln -sfn lib "$CUDA/lib64"
  (cd "$CUDA/lib" && for f in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
     ln -sf "$f" "${f%%.so*}.so"; done)
fi
"$CUDA/bin/nvcc" --version | tail -2

cd "$HERE"
export CARGO_TARGET_DIR="$HERE/target-cuda"
cargo fetch --locked >/dev/null

# A link-only libcuda.so (soname libcuda.so.1) exporting every driver entry point cudarc
# declares, each returning CUDA_ERROR_STUB_LIBRARY (34). Never shipped.
if [ ! -f "$CUDA/lib/stubs/libcuda.so" ]; then
  CUDARC_SRC=$(cargo metadata --locked --all-features --format-version 1 | "$PY" -c 'import json,sys,os; m=json.load(sys.stdin); print(os.path.dirname([p for p in m["packages"] if p["name"]=="cudarc"][0]["manifest_path"]))')
  mkdir -p "$WORK/stubsrc" "$CUDA/lib/stubs"
  grep -oE 'pub (unsafe )?fn cu[A-Za-z0-9_]+' "$CUDARC_SRC/src/driver/sys/mod.rs" | awk '{print $NF}' | sort -u > "$WORK/stubsrc/libcuda.syms"
  { while read -r s; do echo "int $s(void) { return 34; }"; done < "$WORK/stubsrc/libcuda.syms"; } > "$WORK/stubsrc/libcuda_stub.c"
  gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$CUDA/lib/stubs/libcuda.so" "$WORK/stubsrc/libcuda_stub.c"
fi

export CUDA_HOME="$CUDA" CUDA_ROOT="$CUDA" CUDA_PATH="$CUDA" CUDA_TOOLKIT_ROOT_DIR="$CUDA"
export PATH="$CUDA/bin:$PATH"
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
export LIBRARY_PATH="$CUDA/lib:$CUDA/lib/stubs"
export LD_LIBRARY_PATH="$CUDA/lib"
echo "== cargo build (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
cargo build --release --locked -p adt-bench -p adt-plugin-samplers-dylib \
  -p adt-plugin-sd15 -p adt-plugin-sdxl -p adt-plugin-sd3 \
  --features adt-bench/cuda,adt-plugin-sd15/cuda,adt-plugin-sdxl/cuda,adt-plugin-sd3/cuda

DIST="$HERE/dist/adt-bench-cuda"
rm -rf "$DIST" && mkdir -p "$DIST"
cp "$CARGO_TARGET_DIR/release/adt-bench" "$DIST/"
cp "$CARGO_TARGET_DIR"/release/libadt_plugin_samplers_lib.so \
   "$CARGO_TARGET_DIR"/release/libadt_plugin_sd15.so "$CARGO_TARGET_DIR"/release/libadt_plugin_sdxl.so \
   "$CARGO_TARGET_DIR"/release/libadt_plugin_sd3.so "$DIST/"
# Line tables are for local debugging; the shipped copies drop them (about a third of the size).
strip --strip-debug "$DIST/adt-bench" "$DIST"/*.so
cp "$HERE/scripts/adt-bench-cuda" "$HERE/scripts/torch_adt_iteration.py" "$DIST/"
{
  echo "# NEEDED entries (readelf -d), CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP, nvcc $("$CUDA/bin/nvcc" --version | grep -o 'V[0-9][0-9.]*' | tail -1)"
  for f in "$DIST"/adt-bench "$DIST"/*.so; do
    echo "$(basename "$f"): $(readelf -d "$f" | awk '/NEEDED/ {gsub(/[\[\]]/,"",$5); printf "%s ", $5}')"
  done
} > "$DIST/NEEDED.txt"
cat "$DIST/NEEDED.txt"
if find "$DIST" -name 'libcuda.so*' | grep -q .; then echo "error: a libcuda stub got into dist/" >&2; exit 1; fi
echo "== built $DIST (run it through ./adt-bench-cuda on the GPU machine)"
