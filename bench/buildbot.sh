#!/usr/bin/env bash
# A real Buildbot (PyPI's buildbot[bundle] and buildbot-worker in /opt/kiln-buildbot) running
# what `kiln ci --for buildbot` writes: a master and two workers on this machine, each worker with
# its own HOME (its own local stage cache) and build directories, all sharing the Swift remote
# cache and the test Glance (scripts/swift-setup.sh, scripts/glance-setup.sh), over three recipes
# (the example under three names, each one customize step of its own, published to kiln-alpha).
# Cold: the remote cache empty (a prefix of its own). Warm: the same again with the workers'
# local caches and outputs gone (new machines) and the images deleted. Printed: each run's wall
# time (force to the last build's end), the builds' results as the master's REST API gives them,
# and what shows each stage was made once: the provisioning domains libvirt started (the three
# recipes share their provisioned disk), one entry per stage key on Swift, one image per recipe
# in Glance.
# Usage: bench/buildbot.sh. Needs the services of scripts/test.sh (libvirtd, Keystone, Glance, Swift).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${BENCH_DIR:-/var/tmp}/kiln-bb
venv=${KILN_BUILDBOT_VENV:-/opt/kiln-buildbot}
[ -x "$venv/bin/buildbot" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q 'buildbot[bundle]' buildbot-worker; }
cargo build --release --quiet
kiln=$PWD/target/release/kiln
. "${KILN_SWIFT_DIR:-/var/tmp/kiln-swift}/s3.env"
clouds=${OS_CLIENT_CONFIG_FILE:-${KILN_GLANCE_DIR:-/var/tmp/kiln-glance}/clouds.yaml}
run_id=$(date +%s)
www=8012 pb=9991
stop_all() {
  for d in "$B"/worker-1 "$B"/worker-2; do [ -d "$d" ] && "$venv/bin/buildbot-worker" stop "$d" >/dev/null 2>&1 || true; done
  [ -d "$B/master" ] && "$venv/bin/buildbot" stop "$B/master" >/dev/null 2>&1 || true
}
stop_all
rm -rf "$B" && mkdir -p "$B/src" "$B/master/secrets"
trap stop_all EXIT

# The recipes' repository.
cp -r examples/files "$B/src/"
for r in a b c; do
  sed -e "s/^name: .*/name: bb-$r/" \
      -e "s|^customize:\$|customize:\\n  - append-line: \"/etc/bb-$r:$r\"|" \
      -e "s|^    dir: kiln-output\$|    dir: kiln-output\\n  glance:\\n    cloud: kiln-alpha\\n    name: \"bb-$r-$run_id\"|" \
      examples/debian-12.yaml > "$B/src/bb-$r.yaml"
  grep -q "bb-$r-$run_id" "$B/src/bb-$r.yaml" || { echo "bench/buildbot.sh: the example changed shape" >&2; exit 1; }
done
git -C "$B/src" init -q -b main
git -C "$B/src" add -A
git -C "$B/src" -c user.name=kiln -c user.email=kiln@invalid commit -q -m recipes

# The master: kiln ci's master.cfg, secrets in SecretInAFile's directory (0600).
"$venv/bin/buildbot" create-master -r "$B/master" >/dev/null
(cd "$B/src" && "$kiln" ci bb-a.yaml bb-b.yaml bb-c.yaml --for buildbot --worker w1 --worker w2 \
  --repo "$B/src" --cache-remote "s3://kiln-cache/bb-$run_id" -o "$B/master/master.cfg" >/dev/null)
umask 077
for w in w1 w2; do head -c 18 /dev/urandom | base64 > "$B/master/secrets/worker-$w"; done
printf '%s' "$AWS_ACCESS_KEY_ID" > "$B/master/secrets/cache-access-key-id"
printf '%s' "$AWS_SECRET_ACCESS_KEY" > "$B/master/secrets/cache-secret-access-key"
printf '%s' "$AWS_ENDPOINT_URL" > "$B/master/secrets/cache-endpoint"
cp "$clouds" "$B/master/secrets/clouds.yaml"
umask 022
KILN_BUILDBOT_WWW_PORT=$www KILN_BUILDBOT_PB=tcp:$pb:interface=127.0.0.1 \
  "$venv/bin/buildbot" start "$B/master" >/dev/null
api() { curl -sf "http://127.0.0.1:$www/api/v2/$1"; }

# Two workers, each its own HOME (stage cache ~/.cache/kiln) and build directories.
start_worker() {
  local n=$1
  rm -rf "$B/worker-$n" "$B/home-$n"
  mkdir -p "$B/home-$n"
  "$venv/bin/buildbot-worker" create-worker -q "$B/worker-$n" "127.0.0.1:$pb" "w$n" \
    "$(cat "$B/master/secrets/worker-w$n")" >/dev/null
  env -i PATH="$(dirname "$kiln"):/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    HOME="$B/home-$n" LIBGUESTFS_BACKEND=direct LANG=C.UTF-8 \
    "$venv/bin/buildbot-worker" start "$B/worker-$n" >/dev/null
}

# Force every builder; wait for three finished builds; print the wall time and the results.
round() {
  local label=$1 start ids n
  start=$(date +%s.%N)
  ids=$(api builders | python3 -c 'import json,sys; print(" ".join(str(b["builderid"]) for b in json.load(sys.stdin)["builders"]))')
  curl -sf -X POST -H 'Content-Type: application/json' "http://127.0.0.1:$www/api/v2/forceschedulers/force" \
    -d '{"jsonrpc":"2.0","method":"force","id":1,"params":{"builderNames":["bb-a-1.0","bb-b-1.0","bb-c-1.0"]}}' >/dev/null
  while :; do
    n=$(api "builds?complete=true" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["builds"]))')
    [ "$n" -ge "$2" ] && break
    sleep 5
  done
  printf '%s: %.0f s for three recipes on two workers\n' "$label" "$(echo "$(date +%s.%N) - $start" | bc)"
  api "builds?complete=true&order=buildid" | python3 -c '
import json, sys
for b in json.load(sys.stdin)["builds"][-3:]:
    print("  build %s on worker %s: %s" % (b["builderid"], b["workerid"], {0: "SUCCESS"}.get(b["results"], "FAILED (%s)" % b["results"])))
    if b["results"] != 0:
        sys.exit(1)'
  : "$ids"
}

# libvirt's per-domain logs of this run only (earlier runs left theirs).
touch "$B/started"
start_worker 1
start_worker 2
round "cold (empty remote cache)" 3
prov=$(find /var/log/libvirt/qemu -newer "$B/started" -name 'kiln-bb-*.log' | grep -cE '/kiln-bb-[abc]-[0-9a-f]{8}\.log$' || true)
echo "  provisioning VMs libvirt started for the three recipes: $prov (they share one provisioned disk)"
"$kiln" image --os-cloud kiln-alpha list -f json | python3 -c "
import json, sys
imgs = [i for i in json.load(sys.stdin) if i['name'].endswith('-$run_id')]
names = sorted(i['name'] for i in imgs)
print('  Glance images:', ', '.join(names))
sys.exit(0 if names == ['bb-a-$run_id', 'bb-b-$run_id', 'bb-c-$run_id'] else 1)"

# Warm: new machines (no local cache, no outputs), the same remote; the images are deleted first.
for id in $("$kiln" image --os-cloud kiln-alpha list -f json | python3 -c "
import json, sys
print(' '.join(i['id'] for i in json.load(sys.stdin) if i['name'].endswith('-$run_id')))"); do
  "$kiln" image --os-cloud kiln-alpha delete "$id" >/dev/null
done
for n in 1 2; do "$venv/bin/buildbot-worker" stop "$B/worker-$n" >/dev/null; done
start_worker 1
start_worker 2
round "warm (the remote cache holds every stage)" 6
