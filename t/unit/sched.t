#!/usr/bin/perl
exec "./build/t/test_sched" or die "run make first: $!\n";
