#!/usr/bin/env bash
# The project's test command (README): installs what the tests need, then
# runs the whole suite under the race detector.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/testdeps.sh
exec go test -race -timeout 20m "$@" ./...
