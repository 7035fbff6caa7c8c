#!/usr/bin/env bash
# The peer's own environment (Keras 3 on TensorFlow, CPU): never a dependency of textrnn.
set -euo pipefail
VENV=${PEER_VENV:-/work/peer-venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -r "$(dirname "$0")/requirements.txt"
echo "peer environment ready: $VENV/bin/python"
