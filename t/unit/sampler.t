#!/usr/bin/perl
exec "./build/t/test_sampler" or die "run 'make units' first: $!\n";
