#!/usr/bin/perl
exec "./build/t/test_tp" or die "run make first: $!\n";
