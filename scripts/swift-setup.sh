#!/usr/bin/env bash
# A real one-node OpenStack Swift (Debian's swift packages) on 127.0.0.1 for the remote stage
# cache's tests: account, container and object servers on one device, the proxy on :8080 with
# Keystone auth from the Keystone of scripts/glance-setup.sh (authtoken + keystoneauth for
# Swift's own API; s3api + s3token for the S3 API, whose access keys are Keystone EC2
# credentials), memcached for tokens. Creates a `cache` project with a member user, its EC2
# credential and the container `kiln-cache`; prints the S3 environment kiln reads.
#
# Needs Keystone up (scripts/glance-setup.sh first).
#
#   scripts/swift-setup.sh          # configure and start; writes the S3 environment to $dir/s3.env
#   scripts/swift-setup.sh stop     # stop what it started
#
# State in $KILN_SWIFT_DIR (default /var/tmp/kiln-swift); PIDs in its run/pids (and in
# $KILN_SERVICES_PIDFILE if set).
set -euo pipefail
dir=${KILN_SWIFT_DIR:-/var/tmp/kiln-swift}
venv=${KILN_GLANCE_VENV:-/opt/kiln-glance-venv}
admin_pw=${KILN_GLANCE_ADMIN_PASSWORD:-kiln-admin-pw}
svc_pw=kiln-swift-svc-pw
user_pw=kiln-cache-pw
ks=http://127.0.0.1:5000/v3

stop() { # and wait until they are gone: new servers must find their ports free
  [ -f "$dir/run/pids" ] || return 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$dir/run/pids"
  for _ in $(seq 1 100); do
    alive=0
    while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$dir/run/pids"
    [ $alive = 0 ] && break
    sleep 0.1
  done
  rm -f "$dir/run/pids"
}
if [ "${1:-}" = stop ]; then stop; exit 0; fi

for c in swift-ring-builder swift-proxy-server swift-object-server memcached curl "$venv/bin/openstack"; do
  command -v "$c" >/dev/null || { echo "swift-setup: $c missing (scripts/install-deps.sh, scripts/glance-setup.sh)" >&2; exit 1; }
done
/usr/bin/python3 -c 'import keystonemiddleware' 2>/dev/null \
  || { echo "swift-setup: python3-keystonemiddleware missing (scripts/install-deps.sh)" >&2; exit 1; }
curl -sf -o /dev/null "$ks" || { echo "swift-setup: no Keystone on $ks (scripts/glance-setup.sh)" >&2; exit 1; }
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
# Identity: the proxy's service user, the object-store endpoint, a `cache` project whose member
# user holds the EC2 credential the S3 API takes. Recreated each run (fresh secret).
os() {
  env -u OS_CLOUD OS_AUTH_URL=$ks OS_IDENTITY_API_VERSION=3 OS_USERNAME=admin OS_PASSWORD="$admin_pw" \
    OS_PROJECT_NAME=admin OS_USER_DOMAIN_ID=default OS_PROJECT_DOMAIN_ID=default \
    OS_REGION_NAME=RegionOne "$venv/bin/openstack" "$@"
}
# Three `openstack` processes instead of seventeen (~2 s of Python imports each): what exists,
# then every change read by one process from its standard input (cliff's shell).
# Each kind its own line form: "USER default", "PROJECT True", "ROLE", "object-store".
have=$(printf '%s\n' "user list --long -f value -c Name -c Domain" \
  "project list --long -f value -c Name -c Enabled" "role list -f value -c Name" \
  "service list -f value -c Type" | os) || true
has() { grep -qx "$1" <<<"$have"; }
identity=$(mktemp)
{
  for u in swift cache-user; do if has "$u default"; then echo "user delete $u"; fi; done
  has "cache True" || echo "project create --domain default cache"
  has "service True" || echo "project create --domain default service"
  echo "user create --domain default --password $svc_pw swift"
  echo "role add --project service --user swift admin"
  has service || echo "role create service"
  echo "role add --project service --user swift service"
  echo "user create --domain default --password $user_pw cache-user"
  echo "role add --project cache --user cache-user member"
  if ! has object-store; then
    echo "service create --name swift object-store"
    echo "endpoint create --region RegionOne object-store public 'http://127.0.0.1:8080/v1/AUTH_%(project_id)s'"
  fi
} > "$identity"
# The shell's exit status is 1 whatever happened: a command that failed said so on stderr.
os < "$identity" > "$dir/identity.log" 2> "$dir/identity.err" || true
rm -f "$identity"
if [ -s "$dir/identity.err" ]; then
  echo "swift-setup: creating Swift's users, roles and endpoint in Keystone failed:" >&2
  cat "$dir/identity.err" >&2
  exit 1
fi
# One value per line.
{ read -r access; read -r secret; } < <(os ec2 credentials create --project cache --user cache-user -f value -c access -c secret)
[ -n "$secret" ] || { echo "swift-setup: no EC2 credential from Keystone" >&2; exit 1; }
# The servers drop to the swift user: it must own the device.
chown -R swift:swift "$dir/devices"
cat > proxy-server.conf <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = 8080
swift_dir = $dir
workers = 1
[pipeline:main]
# authtoken first: it strips identity headers, which s3token sets for keystoneauth.
pipeline = catch_errors proxy-logging cache authtoken s3api s3token keystoneauth copy slo dlo proxy-logging proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
[filter:s3api]
use = egg:swift#s3api
[filter:s3token]
use = egg:swift#s3token
auth_uri = $ks
# Keystone 30 lets only services validate S3 signatures (identity:s3tokens_validate).
auth_type = password
auth_url = $ks
project_domain_id = default
user_domain_id = default
project_name = service
username = swift
password = $svc_pw
[filter:authtoken]
paste.filter_factory = keystonemiddleware.auth_token:filter_factory
www_authenticate_uri = $ks
auth_url = $ks
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = service
username = swift
password = $svc_pw
delay_auth_decision = True
memcached_servers = 127.0.0.1:11211
[filter:keystoneauth]
use = egg:swift#keystoneauth
operator_roles = admin, member
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:11211
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
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
# Ports still taken (a Swift this script did not start, or one that will not die) would give
# servers that exit at once and a proxy answering 503: say so instead.
for p in 6200 6201 6202 8080 11211; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "swift-setup: port $p on 127.0.0.1 is in use (another Swift or memcached?)" >&2
    exit 1
  fi
done
start memcached memcached -l 127.0.0.1 -p 11211 -u nobody
for n in account container object; do start "$n" "swift-$n-server" "$n-server.conf"; done
start proxy swift-proxy-server proxy-server.conf
# The container through Swift's own API, with the cache user's Keystone token.
cos() {
  env -u OS_CLOUD OS_AUTH_URL=$ks OS_IDENTITY_API_VERSION=3 OS_USERNAME=cache-user OS_PASSWORD="$user_pw" \
    OS_PROJECT_NAME=cache OS_USER_DOMAIN_ID=default OS_PROJECT_DOMAIN_ID=default \
    OS_REGION_NAME=RegionOne "$venv/bin/openstack" "$@"
}
{ read -r token; read -r project; } < <(cos token issue -f value -c id -c project_id)
for _ in $(seq 1 100); do
  curl -s -o /dev/null http://127.0.0.1:8080/healthcheck && break
  sleep 0.2
done
# The account and container servers may still be starting: a 503 until they answer (on a
# loaded machine that takes a while).
for _ in $(seq 1 300); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H "X-Auth-Token: $token" \
    "http://127.0.0.1:8080/v1/AUTH_$project/kiln-cache") || true
  case $code in 201|202) break ;; esac
  sleep 0.2
done
case $code in 201|202) ;; *) echo "swift-setup: creating the container: HTTP $code (503: the servers are not up, or the disk under $dir is nearly full: Swift refuses writes with less than 1% free)" >&2; exit 1 ;; esac
echo "Swift on http://127.0.0.1:8080 (Keystone auth; S3 API with the cache project's EC2 credential, bucket kiln-cache)"
# The secret goes to a private file, not to the log.
(umask 077; echo "export AWS_ACCESS_KEY_ID=$access AWS_SECRET_ACCESS_KEY=$secret AWS_ENDPOINT_URL=http://127.0.0.1:8080" > "$dir/s3.env")
echo ". $dir/s3.env  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL for kiln --cache-remote s3://kiln-cache"
