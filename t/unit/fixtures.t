#!/usr/bin/perl
exec "./build/t/test_fixtures" or die "run 'make units' first: $!\n";
