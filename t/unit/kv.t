#!/usr/bin/perl
exec "./build/t/test_kv" or die "run make first: $!\n";
