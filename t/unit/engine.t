#!/usr/bin/perl
exec "./build/t/test_engine" or die "run make first: $!\n";
