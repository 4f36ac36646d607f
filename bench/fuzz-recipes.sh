#!/usr/bin/env bash
# Fuzz the recipe loader and validator (issue 12): a million generated and mutated recipes
# through `recipe::load_all` and the answer-file renderers, in-process (bench/fuzz_recipes.rs).
# Fails on any panic, any input that takes 1 s or more, or one that needs 256 MiB of heap.
#
#   bench/fuzz-recipes.sh [CASES] [SEED]     # default 1000000 1
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-1000000}
seed=${2:-1}
cargo build -q --release --example fuzz-recipes
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
exec target/release/examples/fuzz-recipes "$cases" "$seed"
