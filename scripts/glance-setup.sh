#!/usr/bin/env bash
# A real Keystone 30 + Glance 33 on 127.0.0.1 for kiln's tests (nothing mocked): installed from
# PyPI into a venv (pinned by scripts/glance-constraints.txt), sqlite databases, two file stores,
# the image cache, all three import methods, Keystone auth. Served by uWSGI (glance-api no
# longer runs standalone). Creates an admin, a `service` project with the glance user, and two
# ordinary projects (alpha, beta) with a member user each, then writes a clouds.yaml with the
# clouds kiln-admin, kiln-alpha and kiln-beta. A second Glance (its own database and store, port
# 9293) is the cloud's RegionTwo.
#
#   scripts/glance-setup.sh                 # install if needed, configure, start; prints the env
#   scripts/glance-setup.sh stop            # stop what it started
#   scripts/glance-setup.sh restart-glance  # stop Glance (SIGTERM) and start it again, same state
#   scripts/glance-setup.sh install         # only install the venv (.ci/run, beside the build)
#
# State lives in $KILN_GLANCE_DIR (default /var/tmp/kiln-glance); the venv in
# $KILN_GLANCE_VENV (default /opt/kiln-glance-venv) is reused when present. PIDs go to
# $KILN_GLANCE_DIR/pids (and to $KILN_SERVICES_PIDFILE if set).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=${KILN_GLANCE_DIR:-/var/tmp/kiln-glance}
venv=${KILN_GLANCE_VENV:-/opt/kiln-glance-venv}
admin_pw=${KILN_GLANCE_ADMIN_PASSWORD:-kiln-admin-pw}
svc_pw=kiln-glance-svc-pw
py=${PYTHON:-python3}

stop() {
  [ -f "$dir/pids" ] || return 0
  while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$dir/pids"
  for _ in $(seq 1 50); do
    alive=0
    while read -r pid; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$dir/pids"
    [ $alive = 0 ] && break
    sleep 0.1
  done
  rm -f "$dir/pids"
}
if [ "${1:-}" = stop ]; then stop; exit 0; fi

start_uwsgi() { # name config-dir-variable config-dir
  local name=$1
  env "$2=$3" setsid "$venv/bin/uwsgi" --ini "$3/uwsgi.ini" </dev/null >/dev/null 2>&1 3>&- 4>&- &
  echo $! >> "$dir/pids"
  echo $! > "$dir/$name.pid"
  if [ -n "${KILN_SERVICES_PIDFILE:-}" ]; then echo $! >> "$KILN_SERVICES_PIDFILE"; fi
}

answers() { # a status below 500: the app loaded
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1") || return 1
  [ "$code" -ge 200 ] && [ "$code" -lt 500 ]
}
wait_for() { # name url log
  for _ in $(seq 1 300); do answers "$2" && return 0; sleep 0.2; done
  echo "$1 does not answer on $2; its log:" >&4; tail -30 "$3" >&4; exit 1
}

if [ "${1:-}" = restart-glance ]; then
  pid=$(cat "$dir/glance.pid")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  for _ in $(seq 1 100); do answers http://127.0.0.1:9292/versions || break; sleep 0.1; done
  exec 4>&2
  start_uwsgi glance OS_GLANCE_CONFIG_DIR "$dir/glance"
  wait_for glance http://127.0.0.1:9292/versions "$dir/glance-uwsgi.log"
  echo "Glance restarted (pid $(cat "$dir/glance.pid"))"
  exit 0
fi

if [ ! -x "$venv/bin/glance-manage" ] || [ ! -x "$venv/bin/uwsgi" ]; then
  echo "installing Keystone and Glance into $venv (about 2 minutes)"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -c "$here/glance-constraints.txt" \
    glance keystone python-glanceclient python-openstackclient uWSGI
fi
if [ "${1:-}" = install ]; then exit 0; fi
bin=$venv/bin

stop
rm -rf "$dir" && mkdir -p "$dir"/{keystone,glance,store1,store2,staging,tasks,cache,fernet,credential} \
  "$dir"/region2/{glance,store,staging,tasks,cache}
ks=$dir/keystone gl=$dir/glance
# The OpenStack tools print pages of deprecation warnings: keep them in a log, show its tail
# only when something fails.
exec 3>&1 4>&2 >"$dir/setup.log" 2>&1
trap 'echo "glance-setup failed; the end of $dir/setup.log:" >&4; tail -30 "$dir/setup.log" >&4' ERR

cat > "$ks/keystone.conf" <<CONF
[DEFAULT]
log_file = $dir/keystone.log
[database]
connection = sqlite:///$ks/keystone.sqlite?timeout=30
[token]
provider = fernet
[fernet_tokens]
key_repository = $dir/fernet
[credential]
key_repository = $dir/credential
CONF
export OS_KEYSTONE_CONFIG_DIR=$ks
"$bin/keystone-manage" --config-file "$ks/keystone.conf" db_sync
"$bin/keystone-manage" --config-file "$ks/keystone.conf" fernet_setup --keystone-user root --keystone-group root
"$bin/keystone-manage" --config-file "$ks/keystone.conf" credential_setup --keystone-user root --keystone-group root
"$bin/keystone-manage" --config-file "$ks/keystone.conf" bootstrap --bootstrap-password "$admin_pw" \
  --bootstrap-admin-url http://127.0.0.1:5000/v3 --bootstrap-public-url http://127.0.0.1:5000/v3 \
  --bootstrap-internal-url http://127.0.0.1:5000/v3 --bootstrap-region-id RegionOne

uwsgi_ini() { # file port module log processes threads [second-address]
  cat > "$1" <<INI
[uwsgi]
http-socket = 127.0.0.1:$2
${7:+http-socket = $7:$2}
module = $3
master = true
processes = $5
threads = $6
lazy-apps = true
die-on-term = true
http-raw-body = true
http-chunked-input = true
http-auto-chunked = true
chunked-input-limit = 16777216
http-keepalive = false
add-header = Connection: close
buffer-size = 65535
logto = $4
INI
}
# Keystone in processes of one thread each: with 4 threads a process, an application credential
# made while Swift's s3tokens requests were being validated took their token's role (`service`)
# as the user's and was refused ("Could not find role assignment"; CI14, with the remote cache
# tests beside the Glance ones).
uwsgi_ini "$ks/uwsgi.ini" 5000 keystone.wsgi.api:application "$dir/keystone-uwsgi.log" 4 1
start_uwsgi keystone OS_KEYSTONE_CONFIG_DIR "$ks"
wait_for keystone http://127.0.0.1:5000/v3 "$dir/keystone-uwsgi.log"

# Identity objects, as the admin.
export OS_AUTH_URL=http://127.0.0.1:5000/v3 OS_IDENTITY_API_VERSION=3 OS_USERNAME=admin \
  OS_PASSWORD=$admin_pw OS_PROJECT_NAME=admin OS_USER_DOMAIN_ID=default \
  OS_PROJECT_DOMAIN_ID=default OS_REGION_NAME=RegionOne
# One `openstack` process reads every command from its standard input (cliff's shell): each
# process start costs ~2 s of Python imports, and these were twenty.
identity=$(mktemp)
{
  echo "project create --domain default service"
  echo "user create --domain default --password $svc_pw glance"
  echo "role add --project service --user glance admin"
  echo "role add --project service --user glance service"
  echo "service create --name glance image"
  # Each interface its own address, so that a client using the wrong one is caught: Glance
  # answers on public (127.0.0.1) and internal (127.0.0.2); nothing listens on admin (127.0.0.3).
  for e in public=127.0.0.1 internal=127.0.0.2 admin=127.0.0.3; do
    echo "endpoint create --region RegionOne image ${e%%=*} http://${e#*=}:9292"
  done
  # RegionTLS: the same Glance behind stunnel's TLS (scripts: tls_front below), for cacert and
  # verify in clouds.yaml.
  echo "region create RegionTLS"
  echo "endpoint create --region RegionTLS image public https://127.0.0.1:9443"
  # RegionTwo: another Glance (port 9293) with its own database and store, as a second region
  # of the same cloud has: images published to several regions.
  echo "region create RegionTwo"
  echo "endpoint create --region RegionTwo image public http://127.0.0.1:9293"
  for p in alpha beta; do
    echo "project create --domain default $p"
    echo "user create --domain default --password $p-pw $p-user"
    echo "role add --project $p --user $p-user member"
    echo "role add --project $p --user $p-user reader"
  done
} > "$identity"
# The shell's exit status is 1 whatever happened: a command that failed said so on stderr.
"$bin/openstack" < "$identity" > "$dir/identity.log" 2> "$dir/identity.err" || true
rm -f "$identity"
if [ -s "$dir/identity.err" ]; then
  echo "glance-setup: creating Keystone's projects, users and endpoints failed:" >&4
  cat "$dir/identity.err" >&4
  exit 1
fi

cat > "$gl/glance-api.conf" <<CONF
[DEFAULT]
log_file = $dir/glance.log
enabled_backends = fs:file,fs2:file
enabled_import_methods = [glance-direct,web-download,copy-image]
image_cache_dir = $dir/cache
worker_self_reference_url = http://127.0.0.1:9292
[database]
connection = sqlite:///$gl/glance.sqlite?timeout=30
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $dir/store1
[fs2]
filesystem_store_datadir = $dir/store2
[os_glance_staging_store]
filesystem_store_datadir = $dir/staging
[os_glance_tasks_store]
filesystem_store_datadir = $dir/tasks
[import_filtering_opts]
allowed_hosts = [127.0.0.1]
allowed_ports = [80,443,8000,8080,18080]
[paste_deploy]
flavor = keystone+cachemanagement
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:5000/v3
auth_url = http://127.0.0.1:5000/v3
auth_type = password
project_domain_id = default
user_domain_id = default
project_name = service
username = glance
password = $svc_pw
[oslo_policy]
enforce_new_defaults = true
CONF
cp "$venv/etc/glance/glance-api-paste.ini" "$gl/"
# glance-manage reads the same directory.
export OS_GLANCE_CONFIG_DIR=$gl
"$bin/glance-manage" --config-file "$gl/glance-api.conf" db_sync >/dev/null 2>&1 \
  || { echo "glance-manage db_sync failed" >&2; exit 1; }
uwsgi_ini "$gl/uwsgi.ini" 9292 glance.wsgi.api:application "$dir/glance-uwsgi.log" 2 4 127.0.0.2
start_uwsgi glance OS_GLANCE_CONFIG_DIR "$gl"
wait_for glance http://127.0.0.1:9292/versions "$dir/glance-uwsgi.log"

# RegionTwo's Glance: the same configuration, its own database, store, staging and cache
# directories and port; one process of one thread (it serves the multi-region tests only, and
# on sqlite two requests writing at once can fail with "database is locked": seen with two).
r2=$dir/region2
sed -e "s|$dir/glance.log|$dir/glance2.log|" -e "s|http://127.0.0.1:9292|http://127.0.0.1:9293|" \
  -e "s|sqlite:///$gl/glance.sqlite|sqlite:///$r2/glance/glance.sqlite|" \
  -e "s|^enabled_backends = .*|enabled_backends = fs:file|" -e "/^\[fs2\]/,+1d" \
  -e "s|$dir/store1|$r2/store|" -e "s|$dir/staging|$r2/staging|" -e "s|$dir/tasks|$r2/tasks|" \
  -e "s|^image_cache_dir = .*|image_cache_dir = $r2/cache|" \
  "$gl/glance-api.conf" > "$r2/glance/glance-api.conf"
cp "$gl/glance-api-paste.ini" "$r2/glance/"
OS_GLANCE_CONFIG_DIR=$r2/glance "$bin/glance-manage" --config-file "$r2/glance/glance-api.conf" \
  db_sync >/dev/null 2>&1 || { echo "glance-manage db_sync (RegionTwo) failed" >&2; exit 1; }
uwsgi_ini "$r2/glance/uwsgi.ini" 9293 glance.wsgi.api:application "$dir/glance2-uwsgi.log" 1 1
start_uwsgi glance2 OS_GLANCE_CONFIG_DIR "$r2/glance"
wait_for glance2 http://127.0.0.1:9293/versions "$dir/glance2-uwsgi.log"

# TLS: a CA and a server certificate for 127.0.0.1; stunnel terminates TLS for Keystone
# (5443) and Glance (9443) and forwards to them.
tls=$dir/tls
mkdir -p "$tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=kiln test CA" \
  -keyout "$tls/ca.key" -out "$tls/ca.pem" -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$tls/server.key" \
  -out "$tls/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$tls/ext.cnf"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
  -days 30 -extfile "$tls/ext.cnf" -out "$tls/server.pem" 2>/dev/null
cat > "$tls/stunnel.conf" <<CONF
foreground = yes
pid =
output = $dir/stunnel.log
cert = $tls/server.pem
key = $tls/server.key
[keystone]
accept = 127.0.0.1:5443
connect = 127.0.0.1:5000
[glance]
accept = 127.0.0.1:9443
connect = 127.0.0.1:9292
CONF
setsid stunnel4 "$tls/stunnel.conf" </dev/null >/dev/null 2>&1 3>&- 4>&- &
echo $! >> "$dir/pids"
if [ -n "${KILN_SERVICES_PIDFILE:-}" ]; then echo $! >> "$KILN_SERVICES_PIDFILE"; fi
for _ in $(seq 1 100); do
  curl -s -o /dev/null --max-time 2 --cacert "$tls/ca.pem" https://127.0.0.1:9443/versions && break
  sleep 0.1
done
curl -s -o /dev/null --max-time 2 --cacert "$tls/ca.pem" https://127.0.0.1:9443/versions \
  || { echo "stunnel does not answer on 9443; its log:" >&4; tail -20 "$dir/stunnel.log" >&4; exit 1; }

cat > "$dir/clouds.yaml" <<YAML
clouds:
  kiln-admin:
    auth: {auth_url: "http://127.0.0.1:5000/v3", username: admin, password: "$admin_pw",
           project_name: admin, user_domain_id: default, project_domain_id: default}
    region_name: RegionOne
    identity_api_version: 3
  kiln-alpha:
    auth: {auth_url: "http://127.0.0.1:5000/v3", username: alpha-user, password: alpha-pw,
           project_name: alpha, user_domain_id: default, project_domain_id: default}
    region_name: RegionOne
    regions: [RegionOne, RegionTwo]
  kiln-beta:
    auth: {auth_url: "http://127.0.0.1:5000/v3", username: beta-user, password: beta-pw,
           project_name: beta, user_domain_id: default, project_domain_id: default}
    region_name: RegionOne
  # TLS: Keystone and Glance over https with the test CA; the same without the CA (fails),
  # with verify off; plain Keystone with Glance over TLS (kiln's own client alone).
  kiln-tls:
    auth: {auth_url: "https://127.0.0.1:5443/v3", username: alpha-user, password: alpha-pw,
           project_name: alpha, user_domain_id: default, project_domain_id: default}
    region_name: RegionTLS
    cacert: $tls/ca.pem
  kiln-tls-noverify:
    auth: {auth_url: "https://127.0.0.1:5443/v3", username: alpha-user, password: alpha-pw,
           project_name: alpha, user_domain_id: default, project_domain_id: default}
    region_name: RegionTLS
    verify: false
  kiln-tls-glance:
    auth: {auth_url: "http://127.0.0.1:5000/v3", username: alpha-user, password: alpha-pw,
           project_name: alpha, user_domain_id: default, project_domain_id: default}
    region_name: RegionTLS
    cacert: $tls/ca.pem
  kiln-tls-glance-untrusted:
    auth: {auth_url: "http://127.0.0.1:5000/v3", username: alpha-user, password: alpha-pw,
           project_name: alpha, user_domain_id: default, project_domain_id: default}
    region_name: RegionTLS
YAML
exec 1>&3 2>&4
echo "Keystone http://127.0.0.1:5000/v3 and Glance http://127.0.0.1:9292 (RegionTwo: 9293) are up (log: $dir)"
echo "export OS_CLIENT_CONFIG_FILE=$dir/clouds.yaml  # clouds: kiln-admin, kiln-alpha, kiln-beta"
