#!/usr/bin/env bash
# The project's test command (README): installs what the tests need, then
# runs the whole suite under the race detector, the fault tests again with
# one processor, and then, without the race detector, the tests that only
# mean something without it (allocation counts, resident memory; they
# carry the build tag !race).
set -euo pipefail
cd "$(dirname "$0")/.."
# The tests that need a peer testdeps.sh could not fetch (offline, no apt)
# skip and say why; the rest of the suite runs regardless.
./scripts/testdeps.sh || echo "test.sh: scripts/testdeps.sh failed; the tests that need its peers will skip" >&2
go test -race -timeout 20m "$@" ./...
# The fault tests again with one processor: the engine must stay correct
# and fair with GOMAXPROCS=1 as well as with the machine's count.
go test -race -cpu=1 -count=1 -timeout 10m "$@" \
	-run 'TestSlowClients|TestClientLeavesMidReply|TestNonReadingClient|TestGracefulShutdown|TestCapEvictsUnproven|TestLobby|TestHandlerTimeout|TestPooledOneShotHangUp|TestRestartChaos|TestTranscripts|TestQuitReplyIsTheLast|TestRingsHostileClient|TestRingsPeerGone|TestNoLostWakeUp|TestScribblingPeer|TestPeerDeath|TestFullRingDeadline' \
	./engine ./ring
# Every test of those files, by name: a pattern of words would miss a new
# one. -s and || true: a tracked test file deleted in the working tree is no
# error.
files=$({ grep -ls '^//go:build !race' $(git ls-files --cached --others --exclude-standard '*_test.go') || true; })
[ -n "$files" ] || exit 0
pkgs=$(echo "$files" | xargs -n1 dirname | sort -u | sed 's|^|./|')
tests=$(sed -n 's/^func \(Test[A-Za-z0-9_]*\)(t \*testing\.T).*/\1/p' $files | sort -u | paste -sd'|')
exec go test -count=1 -timeout 10m "$@" -run "^($tests)\$" $pkgs
