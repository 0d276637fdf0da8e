#!/usr/bin/env bash
# Run the openm1 command line, installing what it needs on first use (see scripts/bootstrap.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="$("$root/scripts/bootstrap.sh" "hf,plot,train,rl,serve,data")"
exec "$py" -m openm1 "$@"
