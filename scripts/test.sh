#!/usr/bin/env bash
# The project's test command (README): installs what the tests need, then
# runs the whole suite under the race detector, and then, without it, the
# tests that only mean something without it (allocation counts, resident
# memory; they carry the build tag !race).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/testdeps.sh
go test -race -timeout 20m "$@" ./...
pkgs=$(grep -l '^//go:build !race' $(git ls-files --cached --others --exclude-standard '*_test.go') | xargs -n1 dirname | sort -u | sed 's|^|./|')
exec go test -count=1 -timeout 10m "$@" -run 'NoAlloc|DoesNotAllocate|ZeroAllocs|OneShotAllocs|Calibration|SizeChange|IdleConnections' $pkgs
