#!/usr/bin/env bash
# What a first user does, checked (run by .ci/run before the test suite):
#  1. scripts/quickstart.sh, exactly as the README says, in an environment with no OS_*
#     variables and HOME pointing at an empty directory (only the Rust toolchain's own
#     location is passed on), then the result: manifest.json, the images, SHA256SUMS.
#  2. The binary stands alone: `cargo install --root DIR`, then the installed kiln, run from
#     another directory with the source tree's elements/ and templates/ hidden (empty tmpfs
#     mounts in a mount namespace of its own: the tree stays whole for anything else running),
#     lists the built-in elements and validates and plans a recipe.
# Usage: scripts/newcomer.sh [HOME-DIR] (default: a new temporary directory; it must be empty).
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD
home=${1:-$(mktemp -d /var/tmp/kiln-newcomer-home.XXXXXX)}
mkdir -p "$home"
[ -z "$(ls -A "$home")" ] || { echo "newcomer: $home is not empty" >&2; exit 1; }
rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
fail() { echo "newcomer: $*" >&2; exit 1; }

echo "== scripts/quickstart.sh with HOME=$home and no OS_* variables"
rm -rf kiln-output
env -i PATH="$cargo_home/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  HOME="$home" RUSTUP_HOME="$rustup_home" CARGO_HOME="$cargo_home" LANG=C.UTF-8 \
  TERM=dumb bash scripts/quickstart.sh | tee /tmp/kiln-quickstart.out
dir=kiln-output/debian-12-1.0
[ -f "$dir/manifest.json" ] || fail "no $dir/manifest.json"
python3 - "$dir/manifest.json" <<'PY' || fail "manifest.json does not describe the build"
import json, os, sys
m = json.load(open(sys.argv[1]))
assert m["name"] == "debian-12" and m["version"] == "1.0", m["name"]
assert all(s["status"] in ("ok", "skipped") for s in m["stages"]), m["stages"]
assert not m.get("published", {}).get("glance"), "published to Glance without a cloud"
# The image booted as a new instance and passed the boot test before it was published.
t = m.get("test") or {}
assert t.get("checks") and all(c["ok"] for c in t["checks"]), t
d = os.path.dirname(sys.argv[1])
for o in m["outputs"]:
    p = os.path.join(d, o["path"])
    assert os.path.getsize(p) == o["size"] > 0, p
print("manifest: ok,", ", ".join(f'{o["path"]} ({o["format"]})' for o in m["outputs"]),
      f'; boot test: {len(t["checks"])} checks passed')
PY
(cd "$dir" && sha256sum -c SHA256SUMS) || fail "SHA256SUMS does not verify"
qemu-img check -q "$dir/debian-12-1.0.qcow2" || fail "the qcow2 output does not check"
left=$(ls -A kiln-output | grep -v '^debian-12-1.0$' || true)
[ -z "$left" ] || fail "left in kiln-output: $left"
grep -q "kiln publish $dir --os-cloud NAME" /tmp/kiln-quickstart.out || fail "no publish hint"
grep -q "qemu-system-x86_64" /tmp/kiln-quickstart.out || fail "no boot hint"
[ -z "$(ls -A "$home" | grep -v '^\.cache$' || true)" ] || fail "quickstart wrote into HOME: $(ls -A "$home")"

echo "== cargo install --root, run without the source tree"
inst=$(mktemp -d /var/tmp/kiln-install.XXXXXX)
elsewhere=$(mktemp -d /var/tmp/kiln-elsewhere.XXXXXX)
cleanup() { rm -rf "$inst" "$elsewhere"; }
trap cleanup EXIT
# The release build quickstart.sh made is reused (same target directory).
cargo install --quiet --locked --path . --root "$inst" --target-dir target
cp -r examples/debian-12.yaml examples/files "$elsewhere/"
cd "$elsewhere"
unshare --mount --propagation private env SRC="$src" K="$inst/bin/kiln" bash -euo pipefail -c '
  mount -t tmpfs kiln-hidden "$SRC/elements"
  mount -t tmpfs kiln-hidden "$SRC/templates"
  [ -z "$(ls -A "$SRC/elements")$(ls -A "$SRC/templates")" ]
  fail() { echo "newcomer: $*" >&2; exit 1; }
  env -u KILN_ELEMENTS_PATH -u KILN_DATA_DIR "$K" elements list | tee elements.txt
  [ "$(grep -c "\[built-in\]" elements.txt)" -ge 6 ] || fail "built-in elements not listed as built-in"
  env -u KILN_ELEMENTS_PATH -u KILN_DATA_DIR "$K" elements show debian | head -1 | grep -q "built-in" \
    || fail "elements show does not say built-in"
  env -u KILN_ELEMENTS_PATH -u KILN_DATA_DIR "$K" validate debian-12.yaml
  env -u KILN_ELEMENTS_PATH -u KILN_DATA_DIR "$K" plan debian-12.yaml --render-dir plan >/dev/null
  grep -q "<domain type=" plan/domain.xml || fail "no domain.xml rendered"
  grep -q "#cloud-config" plan/user-data || fail "no user-data rendered"
'
echo "newcomer: ok (quickstart, outputs verified, installed binary stands alone)"
