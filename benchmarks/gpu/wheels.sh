#!/usr/bin/env bash
# Fill .whl/ (ignored by git) with the wheels the GPU machine lacks (benchmarks/gpu/wheels.txt), for its
# CPython 3.12 on x86-64 Linux, where pip reaches a package index; benchmarks/gpu/check.sh installs them
# there with --no-index --no-deps. Checks that every dependency of those wheels is in the machine's image
# (benchmarks/gpu/image.txt) or among the wheels, and that they stay under their share of what travels
# (WHEELS_MB: 40 of the 64 MiB a device call carries, the checkout's tracked files taking about 24).
set -euo pipefail
cd "$(dirname "$0")/../.."
WHEELS_MB=40
PYTHON=${PYTHON:-python3}
rm -rf .whl.part && mkdir .whl.part
grep -v '^#' benchmarks/gpu/wheels.txt | grep . > .whl.part/requirements.txt
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
done
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl.part -r .whl.part/requirements.txt
rm .whl.part/requirements.txt
"$PYTHON" - "$WHEELS_MB" <<'PY'
"""Every Requires-Dist of the wheels (for Python 3.12 on Linux, no extras) is in the image or a wheel."""
import re
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
image = {norm(line.strip()) for line in Path("benchmarks/gpu/image.txt").read_text().splitlines()
         if line.strip() and not line.startswith("#")}
wheels = sorted(Path(".whl.part").glob("*.whl"))
have = {norm(w.name.split("-")[0]) for w in wheels}
missing = set()
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        for line in z.read(meta).decode().splitlines():
            if line.startswith("Requires-Dist:"):
                req = Requirement(line.split(":", 1)[1].strip())
                if (req.marker is None or req.marker.evaluate(env)) and norm(req.name) not in image | have:
                    missing.add(f"{req.name} (for {w.name.split('-')[0]})")
if missing:
    sys.exit(f"wheels.sh: the GPU machine would lack {', '.join(sorted(missing))}: add them to benchmarks/gpu/wheels.txt")
size = sum(w.stat().st_size for w in wheels) / 2**20
if size > float(sys.argv[1]):
    sys.exit(f"wheels.sh: the wheels take {size:.1f} MiB, over their {sys.argv[1]} MiB share of what a device call carries")
print(f"{len(wheels)} wheels, {size:.1f} MiB, every dependency in the image or among them")
PY
rm -rf .whl && mv .whl.part .whl
echo "wrote .whl/: carry it to the GPU machine (the device tool: carry [\".whl\"]) and run bash benchmarks/gpu/check.sh there"
