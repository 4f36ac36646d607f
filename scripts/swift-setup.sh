#!/usr/bin/env bash
# A real one-node OpenStack Swift (Debian's swift packages) on 127.0.0.1 for the stage cache's
# remote tests: account, container and object servers on one device, the proxy on :8080 with
# tempauth (account `kiln`, user `cache`) and the s3api middleware (S3 access key
# `kiln:cache`), memcached for tokens. Groundwork for issue 13's remote cache.
#
#   scripts/swift-setup.sh          # configure and start; prints the environment
#   scripts/swift-setup.sh stop     # stop what it started
#
# State in $KILN_SWIFT_DIR (default /var/tmp/kiln-swift); PIDs in its run/pids (and in
# $KILN_SERVICES_PIDFILE if set).
set -euo pipefail
dir=${KILN_SWIFT_DIR:-/var/tmp/kiln-swift}
key=kiln-swift-secret

stop() {
  [ -f "$dir/run/pids" ] || return 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$dir/run/pids"
  rm -f "$dir/run/pids"
}
if [ "${1:-}" = stop ]; then stop; exit 0; fi

for c in swift-ring-builder swift-proxy-server swift-object-server memcached curl; do
  command -v "$c" >/dev/null || { echo "swift-setup: $c missing (scripts/install-deps.sh)" >&2; exit 1; }
done
stop
rm -rf "$dir" && mkdir -p "$dir/devices/d1" "$dir/run"
cd "$dir"
cat > swift.conf <<EOF
[swift-hash]
swift_hash_path_suffix = kiln-test
swift_hash_path_prefix = kiln-test
[storage-policy:0]
name = Policy-0
default = yes
EOF
for t in account:6202 container:6201 object:6200; do
  n=${t%%:*} p=${t#*:}
  swift-ring-builder "$n.builder" create 8 1 1 >/dev/null
  swift-ring-builder "$n.builder" add "r1z1-127.0.0.1:$p/d1" 100 >/dev/null
  swift-ring-builder "$n.builder" rebalance >/dev/null
  cat > "$n-server.conf" <<EOF
[DEFAULT]
devices = $dir/devices
mount_check = false
bind_ip = 127.0.0.1
bind_port = $p
swift_dir = $dir
workers = 1
[pipeline:main]
pipeline = $n-server
[app:$n-server]
use = egg:swift#$n
EOF
done
# The servers drop to the swift user: it must own the device.
chown -R swift:swift "$dir/devices"
cat > proxy-server.conf <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = 8080
swift_dir = $dir
workers = 1
[pipeline:main]
pipeline = catch_errors proxy-logging cache s3api tempauth proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:tempauth]
use = egg:swift#tempauth
user_kiln_cache = $key .admin
[filter:s3api]
use = egg:swift#s3api
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:11211
[filter:catch_errors]
use = egg:swift#catch_errors
[filter:proxy-logging]
use = egg:swift#proxy_logging
EOF
start() { # log command…
  local log=$1; shift
  setsid "$@" </dev/null >"$dir/run/$log.log" 2>&1 &
  echo $! >> "$dir/run/pids"
  if [ -n "${KILN_SERVICES_PIDFILE:-}" ]; then echo $! >> "$KILN_SERVICES_PIDFILE"; fi
}
start memcached memcached -l 127.0.0.1 -p 11211 -u nobody
for n in account container object; do start "$n" "swift-$n-server" "$n-server.conf"; done
start proxy swift-proxy-server proxy-server.conf
for _ in $(seq 1 100); do
  curl -s -o /dev/null -f -H "X-Auth-User: kiln:cache" -H "X-Auth-Key: $key" \
    http://127.0.0.1:8080/auth/v1.0 && break
  sleep 0.2
done
token=$(curl -s -i -H "X-Auth-User: kiln:cache" -H "X-Auth-Key: $key" http://127.0.0.1:8080/auth/v1.0 \
  | awk -F': ' 'tolower($1) == "x-auth-token" {print $2}' | tr -d '\r')
[ -n "$token" ] || { echo "swift-setup: the proxy gives no token" >&2; exit 1; }
# The account and container servers may still be starting: a 503 until they answer.
for _ in $(seq 1 50); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "X-Auth-Token: $token" \
    http://127.0.0.1:8080/v1/AUTH_kiln/kiln-cache)
  case $code in 201|202) break ;; esac
  sleep 0.2
done
case $code in 201|202) ;; *) echo "swift-setup: creating the container: HTTP $code" >&2; exit 1 ;; esac
echo "Swift on http://127.0.0.1:8080 (tempauth kiln:cache; S3 API, bucket kiln-cache)"
echo "export AWS_ACCESS_KEY_ID=kiln:cache AWS_SECRET_ACCESS_KEY=$key AWS_ENDPOINT_URL=http://127.0.0.1:8080"
