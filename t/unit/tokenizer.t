#!/usr/bin/perl
exec "./build/t/test_tokenizer" or die "run 'make units' first: $!\n";
