#!/usr/bin/perl
exec "./build/t/test_matmul" or die "run make first: $!\n";
