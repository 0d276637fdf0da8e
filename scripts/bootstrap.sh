#!/usr/bin/env bash
# Prepare a Python environment with openm1 installed (editable) and the extras named in $1.
#
# By default a virtual environment in .venv; set OPENM1_USE_CURRENT_PYTHON=1 to install into the
# Python on PATH instead. A torch that is already there (a CUDA build, say) is kept; otherwise
# torch==$OPENM1_TORCH_VERSION is installed (set PIP_INDEX_URL / PIP_EXTRA_INDEX_URL to take the CPU
# wheel from PyTorch's own index where plain PyPI would give a CUDA build). Prints the interpreter path.
set -euo pipefail
extras="${1:-}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ -n "${OPENM1_USE_CURRENT_PYTHON:-}" ]; then
  py="$(command -v python3 || command -v python)"
else
  if [ ! -x .venv/bin/python ]; then
    echo "openm1: creating a virtual environment in .venv" >&2
    "${PYTHON:-python3}" -m venv .venv >&2
  fi
  py="$root/.venv/bin/python"
fi

"$py" - <<'PY' >&2 || { echo "openm1 needs Python >= 3.10" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

stamp_dir="$("$py" -c 'import sys; print(sys.prefix)')"
stamp="$stamp_dir/.openm1-installed-$(cat pyproject.toml | sha1sum | cut -c1-12)-${extras:-core}"
if [ ! -f "$stamp" ]; then
  if ! "$py" -c "import torch" >/dev/null 2>&1; then
    echo "openm1: installing torch ${OPENM1_TORCH_VERSION:-2.13.0}" >&2
    "$py" -m pip install -q "torch==${OPENM1_TORCH_VERSION:-2.13.0}" >&2
  fi
  spec="."
  [ -n "$extras" ] && spec=".[$extras]"
  echo "openm1: installing openm1${extras:+ with extras [$extras]}" >&2
  "$py" -m pip install -q -e "$spec" >&2
  touch "$stamp"
fi

# The chat-page test drives headless Chromium: with the test extras, install Debian's chromium and its
# driver once when they are missing and apt-get can run (root or passwordless sudo); otherwise that
# test skips and says why. OPENM1_NO_BROWSER_INSTALL=1 turns this off.
browser_stamp="$stamp_dir/.openm1-browser-tried"
if [[ ",$extras," == *",test,"* || ",$extras," == *",dev,"* ]] && [ -z "${OPENM1_NO_BROWSER_INSTALL:-}" ] \
  && [ ! -f "$browser_stamp" ] && command -v apt-get >/dev/null 2>&1 \
  && ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
  if [ -z "$sudo" ] || sudo -n true >/dev/null 2>&1; then
    browser_log="$stamp_dir/.openm1-browser-install.log"
    echo "openm1: installing chromium and chromium-driver with apt-get for the chat-page test (log: $browser_log)" >&2
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      chromium chromium-driver; } >"$browser_log" 2>&1; then
      echo "openm1: could not install chromium (see $browser_log); the chat-page test will skip" >&2
    fi
    touch "$browser_stamp"
  fi
fi
echo "$py"
