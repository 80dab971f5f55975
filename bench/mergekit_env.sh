#!/usr/bin/env bash
# Idempotent set-up of .venv-mergekit, the venv for the mergekit arm of bench/merge.py. mergekit pins its own
# transformers/pydantic versions, so it gets a venv of its own. CPU torch goes in FIRST (from the local wheel cache),
# so no later requirement can pull a CUDA build. A stamp keyed by this file skips the pip work when nothing changed.
#
#     bash bench/mergekit_env.sh
#     .venv-mergekit/bin/mergekit-yaml --help
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
V="${EDITLAB_MERGEKIT_VENV:-$ROOT/.venv-mergekit}"
PY="${PYTHON:-python3}"
[ -x "$V/bin/python" ] || "$PY" -m venv "$V"
stamp="$V/.mergekit-stamp"
want="$(cat "$ROOT/bench/mergekit_env.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! "$V/bin/python" -c "import mergekit, torch" 2>/dev/null; then
  q() { "$V/bin/python" -m pip install -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
  "$V/bin/python" -c "import torch" 2>/dev/null || q torch==2.13.0
  q "mergekit==0.1.5"
  "$V/bin/python" -c "import torch, mergekit, transformers; assert torch.__version__.startswith('2.13.0'), torch.__version__; \
print('mergekit env: torch', torch.__version__, 'transformers', transformers.__version__)"
  echo "$want" > "$stamp"
fi
