#!/usr/bin/perl
exec "./build/t/test_template" or die "run make first: $!\n";
