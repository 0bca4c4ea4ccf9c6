#!/usr/bin/env bash
# The README's test command: installs what the suite needs, then runs it.
# pytest exits 5 when it collects no test: that is a failure here, as is any other non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
export TF_CPP_MIN_LOG_LEVEL=2
# Two pytest-xdist workers (DLENS_TEST_WORKERS to change): most tests trace TensorFlow functions on one
# core; each group of tests sharing an expensive fixture (xdist_group) stays on one worker.
python3 -m pytest tests -q -p no:cacheprovider -n "${DLENS_TEST_WORKERS:-2}" --dist loadgroup --durations=15 "$@"
