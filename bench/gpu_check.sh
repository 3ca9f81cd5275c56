#!/usr/bin/env bash
# The checks that need a CUDA device, as one script for a GPU machine: python3 there must hold a
# CUDA build of torch; dependencies it lacks come as wheels in .whl/ (installed to /tmp/site),
# fetched beforehand where pip works, for that machine's Python (3.12 on the lent H200):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     blake3 zstandard diffusers trimesh importlib_metadata
# The finalize stages are not run there: pymeshlab's wheel (99 MB for 3.12) is more than the
# lent machine takes along (64 MiB a call). Writes pytest's log and the SDS table under $OUT
# (default /tmp/gpu-check).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONPATH=$PWD
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, diffusers, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
python3 -c "from buildsys.determinism import resolve_device; print('auto ->', resolve_device('auto'))"
python3 -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py tests/test_workers.py tests/test_recipe_sds.py 2>&1 | tee "$OUT/pytest.log"
python3 bench/gpu_sds.py --threads "${SDS_THREADS:-8}" 2>&1 | tee "$OUT/gpu_sds.md"
