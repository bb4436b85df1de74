#!/usr/bin/env bash
# Long fuzzing: each fuzz target to at least GOAL executions (default
# 100,000,000), in runs of at most CHUNK (default 20,000,000) that share the
# corpus Go keeps in its cache, so a run may be stopped and resumed. Each
# finished run appends a line to LOG (default fuzz-long.log); a target's
# total is the sum of its lines. A crasher stops its target; Go leaves the
# input under the package's testdata/fuzz.
#
# Usage: scripts/fuzz-long.sh [package:FuzzTarget ...]   (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
goal=${GOAL:-100000000}
chunk=${CHUNK:-20000000}
log=${LOG:-fuzz-long.log}

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	for pkg in $(go list ./...); do
		for t in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
			targets+=("${pkg#github.com/pktipc/pktipc/}:$t")
		done
	done
fi

for spec in "${targets[@]}"; do
	pkg=${spec%%:*} target=${spec#*:}
	total=$(awk -v p="$pkg" -v t="$target" '$2 == p && $3 == t {s += $4} END {print s + 0}' "$log" 2>/dev/null || echo 0)
	while [ "$total" -lt "$goal" ]; do
		n=$((goal - total))
		[ "$n" -gt "$chunk" ] && n=$chunk
		if ! out=$(go test "./$pkg" -run '^$' -fuzz "^$target\$" -fuzztime "${n}x" -timeout 0 2>&1); then
			echo "$out" | tail -20
			echo "$(date -u +%FT%TZ) $pkg $target: FAILED after $total executions" >&2
			exit 1
		fi
		execs=$(echo "$out" | grep -o 'execs: [0-9]*' | tail -1 | awk '{print $2}')
		total=$((total + ${execs:-0}))
		echo "$(date -u +%FT%TZ) $pkg $target ${execs:-0} total $total" | tee -a "$log"
	done
	echo "$pkg $target: $total executions, clean"
done
