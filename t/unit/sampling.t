#!/usr/bin/perl
exec "./build/t/test_sampling" or die "run make first: $!\n";
