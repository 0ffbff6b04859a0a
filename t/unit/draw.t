#!/usr/bin/perl
# the unit test binary from the build directory (LLM_BUILD, as make test
# sets it; build/ otherwise)
my $bin = ($ENV{LLM_BUILD} || './build') . '/t/test_draw';
exec $bin or die "$bin: $! (run make first)\n";
