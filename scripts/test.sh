#!/usr/bin/env bash
# The README's test command: installs what the suite needs, then runs it.
# pytest exits 5 when it collects no test: that is a failure here, as is any other non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL=2
python3 -m pytest tests -q -p no:cacheprovider --durations=15 "$@"
