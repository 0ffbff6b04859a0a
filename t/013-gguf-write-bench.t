# gguf-write (tools/gguf_write.c), which makes the benchmarks' files and
# those of the GPU check: the same bytes whatever the threads, a file
# the engine loads and computes, and llm-engine bench --seqs over it.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $W = "$LLMTest::BUILD/gguf-write";
my $E = $LLMTest::ENGINE;
my $dir = LLMTest->new->dir;

plan skip_all => "no $W" unless -x $W;

sub slurp {
    my ($f) = @_;
    open(my $fh, '<:raw', $f) or return '';
    local $/;
    return <$fh>;
}

for my $type (qw(f16 q4_k_m)) {
    my @f;
    for my $threads (1, 2, 3) {
        my $f = "$dir/micro-$type-$threads.gguf";
        local $ENV{LLM_THREADS} = $threads;
        is(system($W, '--preset', 'micro', '--type', $type, '--out', $f),
           0, "gguf-write micro $type on $threads thread(s)");
        push @f, $f;
    }
    my $a = slurp($f[0]);
    ok(length($a) > 100_000 && $a eq slurp($f[1]) && $a eq slurp($f[2]),
       "$type: the same bytes on 1, 2 and 3 threads");

    my $s = "$dir/micro-$type-seed.gguf";
    system($W, '--preset', 'micro', '--type', $type, '--seed', '7',
           '--out', $s);
    ok(slurp($s) ne $a, "$type: another seed, other weights");
}

my $out = `$E bench --model $dir/micro-f16-1.gguf --prompt-tokens 16 --gen-tokens 4 --reps 1 --seqs 3 --bw-mb 16 2>&1`;
is($? >> 8, 0, 'bench --seqs 3 runs') or diag($out);
like($out, qr/^batch +3 sequences of 16 \+ 4 tokens: prefill [\d.]+ tok\/s, decode [\d.]+ tok\/s/m,
     'it says what the batch did');
my ($res) = $out =~ /^result (.*)$/m;
my %v = map { split /=/, $_, 2 } split ' ', $res // '';
ok($v{seqs} == 3 && $v{batch_decode_tps} > 0 && $v{batch_prefill_tps} > 0
   && $v{batch_tps} > 0, 'and its result line carries the batch rates');

$out = `$E bench --model $dir/micro-f16-1.gguf --seqs 0 2>&1`;
isnt($? >> 8, 0, '--seqs 0 is refused');

done_testing();
