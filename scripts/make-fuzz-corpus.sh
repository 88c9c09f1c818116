#!/usr/bin/env bash
# Write the fuzzer's seed corpus (valid files and the known hostile inputs, one folder per
# reader) to DIR (default: target/fuzz-corpus). `adt-fuzz --corpus DIR` reads it back, with any
# files you add there.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/fuzz-corpus}"
cargo build --release --quiet --bin adt-fuzz
./target/release/adt-fuzz --write-corpus "$dir"
