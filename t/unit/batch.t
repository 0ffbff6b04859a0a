#!/usr/bin/perl
exec "./build/t/test_batch" or die "run make first: $!\n";
