#!/usr/bin/env bash
# FiLiP's own NGSI-LD client tests (tests/clients/test_ngsi_ld_*.py, unmodified) against a fresh
# Kizuna node served from this checkout. Everything FiLiP lives outside the repository, in /tmp.
#
#   tools/filip-tests.sh            # latest filip on PyPI, its tests, a node on a free port
#
# Environment (all optional):
#   FILIP_VERSION   the filip release to install (default: the latest on PyPI)
#   FILIP_GIT       where to clone FiLiP's repository from (default: GitHub; a local mirror works)
#   FILIP_REF       the tag or commit whose tests run (default: v$FILIP_VERSION, or the newest
#                   tag before it when the clone has no such tag)
#   FILIP_WORK      working folder (default /tmp/filip-tests): clone, store, logs
#   FILIP_VENV      the venv for filip and pytest (default $FILIP_WORK/venv)
#   KIZUNA_PYTHON   the Python with Kizuna's dependencies (default: .venv/bin/python of this
#                   checkout, else python3); this checkout's src/ is put first on PYTHONPATH
#   PYTEST_ARGS     extra pytest arguments (e.g. "-k subscription")
#
# Needs: git, python3 (3.9+, with venv), a reachable PyPI; mosquitto for the MQTT cases.
# Prints pytest's summary and exits with pytest's status; the full output is in
# $FILIP_WORK/pytest.txt, the node's log in $FILIP_WORK/kizuna.log.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=${FILIP_WORK:-/tmp/filip-tests}
case "$work" in "$root"|"$root"/*) echo "FILIP_WORK must be outside the repository" >&2; exit 2 ;; esac
mkdir -p "$work"
venv=${FILIP_VENV:-$work/venv}
src=$work/src
run=$work/run
py=${KIZUNA_PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=$(command -v python3)

# -- 1. the release and its tests ---------------------------------------------------------------
pip() { "$venv/bin/pip" "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
version=${FILIP_VERSION:-$(pip index versions filip 2>/dev/null | sed -n 's/^filip (\(.*\))$/\1/p' | head -1)}
[ -n "$version" ] || { echo "could not find filip's latest version on PyPI" >&2; exit 1; }
pip install --quiet "filip==$version" pytest python-dotenv

if [ ! -d "$src/.git" ]; then
  git clone --quiet "${FILIP_GIT:-https://github.com/RWTH-EBC/FiLiP.git}" "$src"
fi
ref=${FILIP_REF:-}
if [ -z "$ref" ]; then
  if git -C "$src" rev-parse -q --verify "refs/tags/v$version" >/dev/null; then
    ref=v$version
  else
    # The newest tag not after the release (the clone may be older than PyPI).
    ref=$( (git -C "$src" tag --list 'v*'; echo "v$version") | sort -V \
      | awk -v v="v$version" '$0 == v { print prev; exit } { prev = $0 }')
    echo "note: no tag v$version in the clone; running the tests of $ref against filip $version" >&2
  fi
fi
git -C "$src" checkout --quiet "$ref"

# The tests run from a copy, so that `import filip` finds the installed release, not the clone.
rm -rf "$run" && mkdir -p "$run" && cp -r "$src/tests" "$run/tests"

# -- 2. a fresh node (and an MQTT broker) ----------------------------------------------------------
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

mqtt_port=$(free_port)
if command -v mosquitto >/dev/null; then
  mosquitto -p "$mqtt_port" >"$work/mosquitto.log" 2>&1 &
  pids+=($!)
else
  echo "note: mosquitto not found; the MQTT cases will fail" >&2
fi

# FiLiP's tests name one remote @context; a machine without internet gets the copy in ../shared.
map=$work/context-map.json
saref=$root/../shared/data/contexts/n5geh-context_saref.jsonld
if [ -f "$saref" ]; then
  printf '{"https://n5geh.github.io/n5geh.test-context.io/context_saref.jsonld": "%s"}\n' \
    "$(cd "$(dirname "$saref")" && pwd)/$(basename "$saref")" >"$map"
else
  echo '{}' >"$map"
fi

port=$(free_port)
rm -f "$work"/k.db*
PYTHONPATH="$root/src" "$py" -m kizuna serve --host 127.0.0.1 --port "$port" \
  --store "sqlite:///$work/k.db" --context-map "$map" >"$work/kizuna.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "http://127.0.0.1:$port/health" >/dev/null || { cat "$work/kizuna.log" >&2; exit 1; }

# -- 3. the tests ------------------------------------------------------------------------------------
echo "filip $version, tests of $ref, Kizuna $(git -C "$root" rev-parse --short HEAD) on port $port"
cd "$run"
set +e
env LD_CB_URL="http://127.0.0.1:$port" CB_URL="http://127.0.0.1:$port" \
  LD_MQTT_BROKER_URL="mqtt://127.0.0.1:$mqtt_port" LD_MQTT_BROKER_URL_INTERNAL="mqtt://127.0.0.1:$mqtt_port" \
  MQTT_BROKER_URL="mqtt://127.0.0.1:$mqtt_port" MQTT_BROKER_URL_INTERNAL="mqtt://127.0.0.1:$mqtt_port" \
  FIWARE_SERVICE=filip FIWARE_SERVICEPATH=/testing \
  "$venv/bin/pytest" -q -p no:cacheprovider -rfEs --tb=short ${PYTEST_ARGS:-} \
  tests/clients/test_ngsi_ld_*.py >"$work/pytest.txt" 2>&1
status=$?
set -e
if grep -q 'short test summary info' "$work/pytest.txt"; then
  sed -n '/short test summary info/,$p' "$work/pytest.txt"
else
  tail -1 "$work/pytest.txt"
fi
exit $status
