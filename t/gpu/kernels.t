#!/usr/bin/perl
# the CUDA kernels against their CPU twins on a GPU; built by make CUDA=1
# only (t/gpu/emu-check.t runs them on the emulator)
my $bin = ($ENV{LLM_BUILD} || './build') . '/t/test_kernels';
if (!-x $bin) {
    print "1..0 # SKIP not built with CUDA=1\n";
    exit 0;
}
exec $bin or die "$bin: $!\n";
