#!/usr/bin/perl
# the CUDA emulator's own tests (t/gpu/emu/README.md); built by make on
# x86-64, not under SAN=1
my $bin = ($ENV{LLM_BUILD} || './build') . '/emu/test_emu';
if (!-x $bin) {
    print "1..0 # SKIP the CUDA emulator is not built here\n";
    exit 0;
}
exec $bin or die "$bin: $!\n";
