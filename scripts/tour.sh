#!/usr/bin/env bash
# The main job: set-up, then the tour on the embedded model (steering vector + weight edit, table, plot).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
source scripts/env.sh
editlab_tour --out "${1:-out/tour}"
