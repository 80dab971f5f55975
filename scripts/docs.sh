#!/usr/bin/env bash
# The docs site in one command: set-up (scripts/env.sh), then docs/build_docs.py into _site/ (arguments pass through,
# e.g. --only 32_rome, --out DIR, --strict). Open _site/index.html; search works from the file system too.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" python docs/build_docs.py "$@"
