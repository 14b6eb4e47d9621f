#!/usr/bin/env bash
# The GPU check, one command on a GPU machine with no network (README, "On a GPU"):
#
#   bash benchmarks/gpu/check.sh              # on the GPU machine, with .whl/ carried there
#   bash benchmarks/gpu/check.sh --rehearse   # here, on the CPU: tiny sizes, the same steps (the suite runs it)
#
# It installs what the machine's own Python lacks from .whl/ (benchmarks/gpu/wheels.sh fills it) and then
# the project itself, both into a private folder ($FACTRECALL_SITE, default /tmp/factrecall-site) with
# --no-index --no-deps, so the machine's torch and transformers are the ones used; then
# benchmarks/gpu/check.py runs the tests marked gpu, the study and the benchmark, writing under $OUT
# (default ./gpu-check). Exit 2: it could not start; 1: a step failed (what ran is written all the same).
set -euo pipefail
cd "$(dirname "$0")/../.."
rehearse=0
for arg in "$@"; do
    case "$arg" in
        --rehearse) rehearse=1 ;;
        -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "check.sh: unknown option '$arg': give --rehearse, or nothing on the GPU machine" >&2; exit 2 ;;
    esac
done
OUT=${OUT:-$PWD/gpu-check}
SITE=${FACTRECALL_SITE:-/tmp/factrecall-site}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
rm -rf "$SITE"
if [ "$rehearse" = 0 ]; then
    if ! compgen -G ".whl/*.whl" >/dev/null; then
        echo "check.sh: no wheels in .whl/: run 'bash benchmarks/gpu/wheels.sh' where pip reaches an index, and carry .whl" >&2
        exit 2
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl
fi
# The project as a user's install makes it (its console scripts too), against whatever torch is there.
"$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE" .
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH" PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu/check.py --out "$OUT" "$@"
