#!/usr/bin/perl
# Interop peer for fdpass's tests: a process nobody here wrote the passing
# code of. It speaks the AnyEvent::FDpasser wire shape (one 0x00 byte and one
# descriptor per sendmsg) through IO::FDPass (Debian libio-fdpass-perl).
# The socket's descriptor number comes from PKTIPC_FDPASS_FD (fdpass.StartChild).
#
#   fdpass_peer.pl send N   pass N pipes, the i-th holding "perl-<i>"
#   fdpass_peer.pl recv N   receive N descriptors, print "<i> <content>" for each
use strict;
use warnings;
use IO::FDPass;

my ($mode, $n) = @ARGV;
defined $n or die "usage: $0 send|recv N\n";
my $sock = $ENV{PKTIPC_FDPASS_FD};
defined $sock or die "PKTIPC_FDPASS_FD is not set\n";
$| = 1;

if ($mode eq 'send') {
	for my $i (0 .. $n - 1) {
		pipe(my $r, my $w) or die "pipe: $!\n";
		print {$w} "perl-$i";
		close $w or die "close: $!\n";
		IO::FDPass::send($sock, fileno $r) or die "IO::FDPass::send $i: $!\n";
		close $r;
	}
	print "sent $n\n";
} elsif ($mode eq 'recv') {
	for my $i (0 .. $n - 1) {
		my $fd = IO::FDPass::recv($sock);
		$fd >= 0 or die "IO::FDPass::recv $i: $!\n";
		open(my $fh, '<&=', $fd) or die "fdopen $fd: $!\n";
		my $content = do { local $/; <$fh> };
		close $fh;
		$content = '' unless defined $content;
		print "$i $content\n";
	}
	print "done\n";
} else {
	die "unknown mode $mode\n";
}
