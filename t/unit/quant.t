#!/usr/bin/perl
exec "./build/t/test_quant" or die "run 'make units' first: $!\n";
