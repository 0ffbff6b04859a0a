#!/usr/bin/perl
exec "./build/t/test_rkv" or die "run make first: $!\n";
