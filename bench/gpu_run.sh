#!/usr/bin/env bash
# The GPU check of the device search path, as one command for a machine with an NVIDIA GPU and no network.
#
#   bench/gpu_run.sh prepare   # where pip works: the baseline kernels as wheels in .whl/ (pure Python)
#   bench/gpu_run.sh [ARGS]    # on the GPU machine; ARGS go to maxsim-bench search (-s KEY=VALUE ...)
#
# It installs maxsim from the checkout (no dependencies fetched: torch, triton, numpy, pyarrow, opencv and
# tqdm must be there) and the wheels in .whl/ when there are any, prints the machine, runs the device-path
# tests on the GPU with the Triton kernel compiled (MAXSIM_TEST_DEVICE=cuda), then `maxsim-bench search`
# with the gpu preset: the bare kernel, late-interaction-kernels and flash-maxsim when installed, and the
# engine with its index resident and streamed, side by side in one run. Results land in $OUT (default
# bench/out/gpu-<time>): tests.log, search.log, results.json, results.md and the plots; results.json
# records the GPU, driver, CUDA, torch and triton versions and the commit (commit it as
# bench/results/<gpu>-<date>.json/.md).
#
# Environment: OUT, MAXSIM_GPU_PRESET (default gpu; smoke runs the same steps on a CPU in the Triton
# interpreter), MAXSIM_GPU_TESTS=0 to skip the tests, MAXSIM_TEST_TIMEOUT and MAXSIM_BENCH_TIMEOUT
# (seconds, defaults 180 and 360: the whole command fits a 10-minute slot).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "prepare" ]]; then
    python3 -m pip download --no-deps --only-binary=:all: -d .whl \
        "late-interaction-kernels>=0.4" "flash-maxsim>=0.3" || exit 1
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    ls -l .whl
    exit 0
fi

OUT="${OUT:-bench/out/gpu-$(date +%Y%m%d-%H%M%S)}"
PRESET="${MAXSIM_GPU_PRESET:-gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir .whl/*.whl || exit 1
fi
if ! python3 -c "import maxsim.kernels" 2> /dev/null; then
    # editable, so that `maxsim.kernels` (the kernels/ folder) resolves from the checkout's root too
    python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || exit 1
fi

python3 - <<'EOF' | tee "$OUT/machine.txt"
import platform, torch, triton
from maxsim.kernels import BACKENDS, triton_available
from maxsim.bench.machine import nvidia_driver
print(f"python {platform.python_version()}, torch {torch.__version__}, triton {triton.__version__}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
          f"capability {p.major}.{p.minor}, CUDA {torch.version.cuda}, driver {nvidia_driver()}")
else:
    print("no GPU: the device path runs in the Triton interpreter on CPU tensors")
print("kernel backends:", ", ".join(b for b in BACKENDS if b != "triton" or triton_available()))
EOF

status=0
device=cpu
python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" && device=cuda
if [[ "${MAXSIM_GPU_TESTS:-1}" != "0" ]]; then
    MAXSIM_TEST_DEVICE=$device timeout "${MAXSIM_TEST_TIMEOUT:-180}" python3 -m pytest -q -p no:cacheprovider -x \
        tests/test_device_search.py 2>&1 | tee "$OUT/tests.log"
    [[ ${PIPESTATUS[0]} == 0 ]] || status=1
fi

timeout "${MAXSIM_BENCH_TIMEOUT:-360}" python3 -m maxsim.bench.cli search --preset "$PRESET" --out "$OUT" \
    "$@" 2>&1 | tee "$OUT/search.log"
[[ ${PIPESTATUS[0]} == 0 ]] || status=1
echo "results in $OUT (exit $status)"
exit $status
