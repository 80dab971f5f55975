#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, nbdev sync checks, notebooks, pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
echo "== nbdev_clean leaves no diff"
nbdev_clean
git diff --exit-code -- nbs || { echo "nbdev_clean changed notebooks: run nbdev_clean and commit"; exit 1; }
echo "== nbdev_export leaves no diff"
nbdev_export
git diff --exit-code -- editlab || { echo "nbdev_export changed the library: run nbdev_export and commit"; exit 1; }
test -z "$(git status --porcelain -- editlab nbs)" || { git status --short -- editlab nbs; echo "untracked exported files: commit them"; exit 1; }
echo "== nbdev_test (slow cells skipped), timing per notebook"
OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" nbdev_test --n_workers "${EDITLAB_NB_WORKERS:-2}" --timing
echo "== pytest"
python -m pytest tests -q -p no:cacheprovider "$@"
