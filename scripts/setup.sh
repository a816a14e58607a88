#!/usr/bin/env bash
# Set up (idempotently) the project's virtual environment.
#   scripts/setup.sh            runtime dependencies + the package (editable)
#   scripts/setup.sh --dev      + test tools (pytest, nbval, hypothesis, ruff, playwright)
#   scripts/setup.sh --browser  + Debian chromium for the real-browser test (apt, needs root)
# Re-running is cheap: pip runs only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${TPCCMA_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
EXTRAS=""
BROWSER=0
for arg in "$@"; do
  case "$arg" in
    --dev) EXTRAS="[dev]" ;;
    --browser) BROWSER=1 ;;
    *) echo "setup.sh: unknown option '$arg' (use --dev, --browser)" >&2; exit 2 ;;
  esac
done

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.tpccma-installed"
if [ -n "$EXTRAS" ]; then stamp="$stamp-dev"; fi
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing tpccma$EXTRAS into $VENV (torch==2.14.1 + torchvision==0.29.1 from pyproject pins)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".$EXTRAS"
  echo "$want" > "$stamp"
else
  echo "==> $VENV is up to date with pyproject.toml"
fi

# The notebooks run in the venv's own kernel.
"$VENV/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null 2>&1 || true

if [ "$BROWSER" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  echo "==> installing Debian chromium for the browser test"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "==> ready: activate with 'source $VENV/bin/activate'"
