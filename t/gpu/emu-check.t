#!/usr/bin/perl
# The GPU check script (t/gpu/check.sh) with the CUDA emulator in the
# GPU's place (t/gpu/emu/README.md): every kernel against its CPU twin,
# the fixture models' logits on --backend cuda against llama.cpp's,
# greedy text as the CPU's, a completion and a stream through nginx with
# the engine on "the GPU", and the bench on a micro model (its speed
# means nothing).  One TAP line per row of the script's table.

use strict;
use warnings;
use File::Temp qw(tempdir);

my $build = $ENV{LLM_BUILD} || './build';
my $fix = $ENV{LLM_FIXTURES} || '../shared/fixtures';

if (!-x "$build/emu/llm-engine" || !-x "$build/emu/test_kernels") {
    print "1..0 # SKIP the CUDA emulator is not built here\n";
    exit 0;
}

my $bin = tempdir(CLEANUP => 1);
for my $f ("emu/llm-engine", "emu/test_kernels", "gguf-write",
           "ngx_http_llm_module.so") {
    my $name = (split m{/}, $f)[-1];
    symlink(Cwd::abs_path("$build/$f"), "$bin/$name")
        or die "symlink $f: $!\n";
}

$ENV{LLM_GPU_BIN} = $bin;
$ENV{LLM_GPU_FIXTURES} = Cwd::abs_path($fix);
$ENV{LLM_GPU_BENCH_SET} = 'micro';

my $out = `bash t/gpu/check.sh 2>&1`;
my $rc = $? >> 8;
my @rows = $out =~ /^\| (?!check \|)(.+?) \| (.+) \|$/mg;
my $n = 0;
my $bad = 0;

while (my ($check, $result) = splice(@rows, 0, 2)) {
    my $fail = $result =~ /\*\*FAIL\*\*/;
    $n++;
    $bad++ if $fail;
    print(($fail ? "not ok" : "ok"), " $n - $check: $result\n");
}

$n++;
print(($rc == 0 && $n > 1 ? "ok" : "not ok"),
      " $n - check.sh exits $rc after " . ($n - 1) . " rows\n");

if ($rc != 0 || $bad) {
    print map { "# $_\n" } split /\n/, $out;
}

print "1..$n\n";

use Cwd ();
