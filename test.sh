#!/usr/bin/env bash
# Run the test suite (CPU; GPU tests skip without CUDA), installing what it needs on first use.
# Extra arguments go to pytest, e.g. ./test.sh tests/model -x  or  ./test.sh -m slow
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="$("$root/scripts/bootstrap.sh" "test")"
cd "$root"
exec "$py" -m pytest -q "$@"
