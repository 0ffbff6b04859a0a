#!/usr/bin/perl
exec "./build/t/test_ring" or die "run make first: $!\n";
