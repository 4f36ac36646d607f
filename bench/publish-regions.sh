#!/usr/bin/env bash
# Benchmark (not a test): one 1 GiB image published to two regions of one cloud (the test
# Keystone's RegionOne and RegionTwo: two Glance APIs with their own stores, scripts/
# glance-setup.sh) by
#   kiln publish DIR                          (both targets of the recipe at once: verified, recorded)
#   openstack image create --file, twice      (one region after the other: what a script does)
# Rounds alternate which goes first; every image is deleted after its round (not timed). Each
# round checks that all four images hold the same bytes (Glance's os_hash_value, SHA-512, against
# the file's). Prints each time, the medians and the ratio kiln/openstack (goal <= 0.6).
# Usage: bench/publish-regions.sh [ROUNDS] (default 3). Needs the Glance of scripts/glance-setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
gdir=${KILN_GLANCE_DIR:-/var/tmp/kiln-glance}
venv=${KILN_GLANCE_VENV:-/opt/kiln-glance-venv}
export OS_CLIENT_CONFIG_FILE=${OS_CLIENT_CONFIG_FILE:-$gdir/clouds.yaml}
work=${BENCH_DIR:-/var/tmp}/kiln-bench-regions
rm -rf "$work/catalog" && mkdir -p "$work/catalog"
cargo build --release --quiet
kiln=$PWD/target/release/kiln
cloud=kiln-alpha
img=$work/catalog/bench-1.raw
# Real data, not a sparse file: every byte is sent and hashed.
head -c 1073741824 /dev/urandom > "$img"
sum=$(sha512sum "$img" | cut -d' ' -f1)

# The catalog directory `kiln build` would leave, its publish settings from `kiln plan` of a
# recipe with the two targets (the same serialization a build writes).
cat > "$work/bench.yaml" <<'YAML'
name: bench
version: "1"
vars: {round: "0"}
source:
  bootstrap: {distro: debian, suite: bookworm, packages: [cloud-init]}
outputs: [raw]
publish:
  glance:
    - {cloud: kiln-alpha, name: "bench-{{vars.round}}"}
    - {cloud: kiln-alpha, region: RegionTwo, name: "bench-{{vars.round}}"}
YAML
manifest() { # round
  "$kiln" plan "$work/bench.yaml" --format json --var "round=$1" --render-dir "$work/plan" \
    | python3 -c '
import json, sys
plan = json.load(sys.stdin)
glance = next(s for s in plan["stages"] if s["name"] == "glance")["inputs"]
print(json.dumps({"name": "bench", "version": "1", "properties": {},
  "outputs": [{"path": "bench-1.raw", "format": "raw", "glance_disk_format": "raw",
               "virtual_size": 1073741824, "sha512": sys.argv[1]}],
  "published": {"local": sys.argv[2], "glance": []}, "publish_glance": glance}))' "$sum" "$work/catalog" \
    > "$work/catalog/manifest.json"
}

now() { date +%s.%N; }
secs() { awk -v x="$1" -v y="$2" 'BEGIN{printf "%.2f", y-x}'; }
ids() { # region name
  "$kiln" image --os-cloud "$cloud" --os-region-name "$1" list --name "$2" -f json \
    | python3 -c 'import json,sys; [print(i["id"]) for i in json.load(sys.stdin)]'
}
same_bytes() { # region name: every image of that name holds the file's bytes
  local id h
  for id in $(ids "$1" "$2"); do
    h=$("$kiln" image --os-cloud "$cloud" --os-region-name "$1" show "$id" -f json \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["os_hash_value"])')
    [ "$h" = "$sum" ] || { echo "$1 $2: os_hash_value $h is not the file's" >&2; exit 1; }
  done
}
cleanup() { # name
  local r id
  for r in RegionOne RegionTwo; do
    for id in $(ids "$r" "$1"); do
      "$kiln" image --os-cloud "$cloud" --os-region-name "$r" delete "$id" >/dev/null 2>&1
    done
  done
}
run_kiln() { # round
  manifest "k$1"
  local t0 t1 r
  t0=$(now); "$kiln" publish "$work/catalog" >"$work/publish.log" 2>&1 || { cat "$work/publish.log"; exit 1; }; t1=$(now)
  for r in RegionOne RegionTwo; do same_bytes "$r" "bench-k$1"; done
  cleanup "bench-k$1"
  K+=("$(secs "$t0" "$t1")")
}
run_openstack() { # round
  local t0 t1 r
  t0=$(now)
  for r in RegionOne RegionTwo; do
    "$venv/bin/openstack" --os-cloud "$cloud" --os-region-name "$r" image create --file "$img" \
      --disk-format raw --container-format bare --private "bench-o$1" >/dev/null
  done
  t1=$(now)
  for r in RegionOne RegionTwo; do same_bytes "$r" "bench-o$1"; done
  cleanup "bench-o$1"
  O+=("$(secs "$t0" "$t1")")
}
declare -a K O
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) = 1 ]; then run_kiln "$r"; run_openstack "$r"; else run_openstack "$r"; run_kiln "$r"; fi
  echo "round $r: kiln publish (two regions at once) ${K[-1]} s, openstack image create twice ${O[-1]} s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
mk=$(median "${K[@]}"); mo=$(median "${O[@]}")
echo "median: kiln ${mk} s, openstack ${mo} s"
awk -v k="$mk" -v o="$mo" 'BEGIN{printf "ratio kiln/openstack: %.2f (goal <= 0.6; kiln also checks size and SHA-512 of each image and records both in the manifest)\n", k/o}'
rm -rf "$work"
