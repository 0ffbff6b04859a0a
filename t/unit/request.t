#!/usr/bin/perl
exec "./build/t/test_request" or die "run make first: $!\n";
