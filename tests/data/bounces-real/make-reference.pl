#!/usr/bin/perl
# Writes reference.json: what Sisimai 4.25 (Debian's libsisimai-perl, the
# reference bounce analyser) finds in every message under real/ and
# not-bounces/ — per file, each recipient with its delivery status, action
# and reason; an empty list when Sisimai does not recognise a bounce.
# Run once from this directory: perl make-reference.pl > reference.json
# The test suite only reads the JSON; it never needs Sisimai.
use strict;
use warnings;
use Sisimai;
use JSON::PP;

my %ref;
for my $dir ('real', 'not-bounces') {
	opendir(my $dh, $dir) or die "$dir: $!";
	for my $f (sort grep { /\.eml$/ } readdir $dh) {
		my $path = "$dir/$f";
		my $data = Sisimai->make($path) // [];
		my @r;
		for my $d (@$data) {
			push @r, {
				address => $d->recipient->address,
				status  => $d->deliverystatus // '',
				action  => $d->action // '',
				reason  => $d->reason // '',
			};
		}
		$ref{$path} = \@r;
	}
	closedir $dh;
}
print JSON::PP->new->canonical->pretty->encode({
	generator => "Sisimai $Sisimai::VERSION",
	files     => \%ref,
});
