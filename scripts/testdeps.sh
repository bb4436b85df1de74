#!/usr/bin/env bash
# Makes sure the third-party test peers are usable. Idempotent and fast when
# they already are.
#
#   Perl IO::FDPass (Debian libio-fdpass-perl): the wire shape of
#   AnyEvent::FDpasser, used by fdpass's interop tests. Without root it is
#   fetched with `apt-get download` and unpacked into .cache/perl (repo-local,
#   git-ignored); as root, `apt-get install` is the fallback.
#   Python 3 socket.send_fds/recv_fds: standard library, only checked.
#
# On success it prints the PERL5LIB to use, as one line `PERL5LIB=<dir>`
# (nothing when the system perl already has the module). Diagnostics go to
# stderr.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache="$root/.cache"

has_fdpass() { PERL5LIB="${1:-}" perl -MIO::FDPass -e1 2>/dev/null; }

# The unpacked module's directory, whatever the architecture and perl version.
cached_lib() {
	local d
	for d in "$cache"/perl/usr/lib/*/perl5/* "$cache"/perl/usr/lib/perl5; do
		if [ -f "$d/IO/FDPass.pm" ]; then
			echo "$d"
			return 0
		fi
	done
	return 1
}

check_python() {
	if ! python3 -c 'import socket; socket.send_fds; socket.recv_fds' 2>/dev/null; then
		echo "testdeps: python3 with socket.send_fds/recv_fds (3.9+) not found; the Python interop tests will skip" >&2
	fi
}

check_python

if has_fdpass; then
	exit 0
fi
if lib=$(cached_lib) && has_fdpass "$lib"; then
	echo "PERL5LIB=$lib"
	exit 0
fi

fetch() {
	mkdir -p "$cache/debs" "$cache/perl"
	(cd "$cache/debs" && apt-get download libio-fdpass-perl >&2) || return 1
	local deb
	deb=$(ls -t "$cache"/debs/libio-fdpass-perl_*.deb 2>/dev/null | head -n 1)
	[ -n "$deb" ] || return 1
	dpkg -x "$deb" "$cache/perl"
}

if ! fetch; then
	if [ "$(id -u)" = 0 ]; then
		echo "testdeps: apt-get download failed; refreshing package lists" >&2
		apt-get update >&2 || true
		if ! fetch; then
			echo "testdeps: installing libio-fdpass-perl system-wide" >&2
			DEBIAN_FRONTEND=noninteractive apt-get install -y libio-fdpass-perl >&2 || true
		fi
	fi
fi

if has_fdpass; then
	exit 0
fi
if lib=$(cached_lib) && has_fdpass "$lib"; then
	echo "PERL5LIB=$lib"
	exit 0
fi
echo "testdeps: Perl IO::FDPass is not usable (libio-fdpass-perl could not be fetched)" >&2
exit 1
