#!/usr/bin/env bash
# The GPU check, one command on a GPU machine with no network (README, "On a GPU"):
#
#   bash benchmarks/gpu/check.sh              # on the GPU machine, with .whl/ carried there
#   bash benchmarks/gpu/check.sh --rehearse   # here, on the CPU: tiny sizes, the same steps (the suite runs it)
#   PYTHON=python3.12 bash benchmarks/gpu/check.sh --rehearse --wheels   # and the wheels' install, as there
#
# It installs what the machine's own Python lacks from .whl/ (benchmarks/gpu/wheels.sh fills it) and then
# the project itself, both into a private folder ($FACTRECALL_SITE, default /tmp/factrecall-site; the wheels'
# folder is $FACTRECALL_WHEELS, default .whl) with
# --no-index --no-deps, so the machine's torch and transformers are the ones used; then
# benchmarks/gpu/check.py runs the tests marked gpu, the study and the benchmark, writing under $OUT
# (default ./gpu-check). Exit 2: it could not start; 1: a step failed (what ran is written all the same).
set -euo pipefail
cd "$(dirname "$0")/../.."
rehearse=0
wheels=0
for arg in "$@"; do
    case "$arg" in
        --rehearse) rehearse=1 ;;
        --wheels) wheels=1 ;;
        -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check.sh: unknown option '$arg': give --rehearse (and --wheels), or nothing on the GPU machine" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$PWD/gpu-check}
SITE=${FACTRECALL_SITE:-/tmp/factrecall-site}
WHEELS=${FACTRECALL_WHEELS:-.whl}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
rm -rf "$SITE"
install=(.)  # the project as a user's install makes it (its console scripts too), against whatever torch is there
if [ "$rehearse" = 0 ] || [ "$wheels" = 1 ]; then
    if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
        echo "check.sh: no wheels in $WHEELS/: run 'bash benchmarks/gpu/wheels.sh' where pip reaches an index, and carry .whl" >&2
        exit 2
    fi
    install+=("$WHEELS"/*.whl)
fi
# One pip call: a second into the same --target would keep the first's bin/ and drop its own scripts.
"$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target "$SITE" "${install[@]}"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH" PYTHONUNBUFFERED=1
args=()
[ "$rehearse" = 1 ] && args+=(--rehearse)
exec "$PYTHON" benchmarks/gpu/check.py --out "$OUT" "${args[@]}"
