#!/usr/bin/env bash
# Convert percent-format .py sources (jupytext) to notebooks in nbs/, then clean them with nbdev.
# Usage: scripts/py2nb.sh path/to/00_models.py [...]   (a development aid; nbs/*.ipynb stay the source of truth)
set -euo pipefail
for f in "$@"; do
  b=$(basename "$f" .py); d="$(dirname "$0")/../nbs"
  [[ "$f" == *tutorials/* ]] && d="$d/tutorials"
  # --update keeps an existing notebook's cell ids (and so the exported modules' cell markers) where the cells are unchanged
  upd=(); [[ -f "$d/$b.ipynb" ]] && upd=(--update)
  jupytext --quiet "${upd[@]}" --to ipynb --update-metadata '{"jupytext":null,"kernelspec":{"display_name":"Python 3","language":"python","name":"python3"}}' -o "$d/$b.ipynb" "$f"
done
nbdev_clean >/dev/null
