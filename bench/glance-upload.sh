#!/usr/bin/env bash
# Benchmark (not a test): the same 1 GiB image uploaded to the same Glance (scripts/
# glance-setup.sh) by
#   kiln image create --file          (whole process: auth, create, stream, verify)
#   openstack image create --file     (whole process)
#   curl -T                           (whole process: token, create, upload; the floor)
# Rounds alternate the three; every image is deleted after its round (not timed). Prints each
# time, the medians and the ratios kiln/openstack (target <= 0.85) and kiln/curl (<= 1.05).
# Usage: bench/glance-upload.sh [ROUNDS] (default 5). Needs the Glance of
# scripts/glance-setup.sh running (OS_CLIENT_CONFIG_FILE points at its clouds.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
gdir=${KILN_GLANCE_DIR:-/var/tmp/kiln-glance}
venv=${KILN_GLANCE_VENV:-/opt/kiln-glance-venv}
export OS_CLIENT_CONFIG_FILE=${OS_CLIENT_CONFIG_FILE:-$gdir/clouds.yaml}
work=${BENCH_DIR:-/var/tmp}/kiln-bench-glance
mkdir -p "$work"
cargo build --release --quiet
kiln=$PWD/target/release/kiln
img=$work/one-gib.raw
if [ ! -f "$img" ] || [ "$(stat -c %s "$img")" != 1073741824 ]; then
  # Real data, not a sparse file: every byte is sent and hashed.
  head -c 1073741824 /dev/urandom > "$img"
fi
cloud=kiln-alpha

curl_upload() { # name: what a shell script with curl does: token, record, PUT the file
  local token id
  token=$(curl -s -i -H 'Content-Type: application/json' -d '{"auth":{"identity":{"methods":["password"],
    "password":{"user":{"name":"alpha-user","domain":{"id":"default"},"password":"alpha-pw"}}},
    "scope":{"project":{"name":"alpha","domain":{"id":"default"}}}}}' \
    http://127.0.0.1:5000/v3/auth/tokens | awk -F': ' 'tolower($1)=="x-subject-token"{print $2}' | tr -d '\r')
  id=$(curl -sf -H "X-Auth-Token: $token" -H 'Content-Type: application/json' \
    -d "{\"name\":\"$1\",\"disk_format\":\"raw\",\"container_format\":\"bare\",\"visibility\":\"private\"}" \
    http://127.0.0.1:9292/v2/images | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  curl -sf -o /dev/null -H "X-Auth-Token: $token" -H 'Content-Type: application/octet-stream' \
    -H 'Expect:' -T "$img" "http://127.0.0.1:9292/v2/images/$id/file"
}

now() { date +%s.%N; }
secs() { awk -v x="$1" -v y="$2" 'BEGIN{printf "%.2f", y-x}'; }
cleanup() { # name
  "$kiln" image --os-cloud "$cloud" list --name "$1" -f json \
    | python3 -c 'import json,sys; [print(i["id"]) for i in json.load(sys.stdin)]' \
    | while read -r id; do "$kiln" image --os-cloud "$cloud" delete "$id" >/dev/null 2>&1; done
}
declare -a K O C
for r in $(seq 1 "$rounds"); do
  n=kiln-bench-$$-$r
  t0=$(now); "$kiln" image --os-cloud "$cloud" create "$n-kiln" --file "$img" --disk-format raw >/dev/null 2>&1; t1=$(now)
  cleanup "$n-kiln"
  t2=$(now); "$venv/bin/openstack" --os-cloud "$cloud" image create --file "$img" --disk-format raw \
    --container-format bare --private "$n-openstack" >/dev/null; t3=$(now)
  cleanup "$n-openstack"
  t4=$(now); curl_upload "$n-curl"; t5=$(now)
  cleanup "$n-curl"
  K+=("$(secs "$t0" "$t1")"); O+=("$(secs "$t2" "$t3")"); C+=("$(secs "$t4" "$t5")")
  echo "round $r: kiln ${K[-1]} s, openstack ${O[-1]} s, curl ${C[-1]} s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }
k=$(median "${K[@]}"); o=$(median "${O[@]}"); c=$(median "${C[@]}")
printf 'medians of %d: kiln %.2f s, openstack %.2f s, curl %.2f s\n' "$rounds" "$k" "$o" "$c"
printf 'kiln/openstack %.2f (target <= 0.85), kiln/curl %.2f (target <= 1.05)\n' \
  "$(awk -v a="$k" -v b="$o" 'BEGIN{print a/b}')" "$(awk -v a="$k" -v b="$c" 'BEGIN{print a/b}')"
