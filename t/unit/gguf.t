#!/usr/bin/perl
exec "./build/t/test_gguf" or die "run 'make units' first: $!\n";
