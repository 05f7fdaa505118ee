#!/usr/bin/env bash
# Create the training environment (if missing) and retrain the demo model:
# writes models/fxtriage-demo/{model.onnx,manifest.toml,MODEL_CARD.md}.
#   models/train/run.sh            # train (a few minutes on 2 cores)
#   VENV=/some/dir models/train/run.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${VENV:-/tmp/fxtriage-train-venv}"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet -r "$here/requirements.txt"
cd "$here"
nice -n 10 "$venv/bin/python" train.py --out "$here/../fxtriage-demo" "$@"
