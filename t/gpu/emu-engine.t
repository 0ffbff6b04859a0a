# The engine on the CUDA emulator (t/gpu/emu/README.md) where a GPU
# would differ from the CPU: tensor parallelism over two emulated GPUs
# through NCCL (logits against llama.cpp's, greedy text against the
# CPU's), a device with little memory (the engine fits what it can and
# says in one line what it cannot), and no device at all.

use strict;
use warnings;
use Cwd ();
use FindBin;
use lib Cwd::abs_path("$FindBin::Bin/../lib");
use Test::More;
use JSON::PP;
use LLMTest;

my $E = "$LLMTest::BUILD/emu/llm-engine";
my $CPU = $LLMTest::ENGINE;
my $F = $LLMTest::FIXTURES;

plan skip_all => 'the CUDA emulator is not built here' unless -x $E;
plan skip_all => "no fixtures in $F" unless -d "$F/models";

my $dir = LLMTest->new->dir;

# runs a program with extra environment; stdout, stderr, exit status
sub run {
    my ($env, @cmd) = @_;
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $ENV{$_} = $env->{$_} for keys %$env;
        open STDOUT, '>', "$dir/out" or die;
        open STDERR, '>', "$dir/err" or die;
        exec @cmd or die "exec: $!";
    }
    waitpid($pid, 0);
    my $st = $?;
    my $slurp = sub {
        open(my $fh, '<', $_[0]) or return '';
        local $/;
        return scalar(<$fh>) // '';
    };
    return ($slurp->("$dir/out"), $slurp->("$dir/err"), $st);
}

sub ref_of {
    my ($m) = @_;
    open(my $fh, '<', "$F/ref/$m.p2.json") or die "$m: $!";
    local $/;
    return decode_json(<$fh>);
}

sub rel_l2 {
    my ($a, $b) = @_;
    my ($num, $den) = (0, 0);
    for my $i (0 .. $#$b) {
        $num += ($a->[$i] - $b->[$i]) ** 2;
        $den += $b->[$i] ** 2;
    }
    return sqrt($num / ($den || 1));
}

my %two = (LLM_EMU_GPUS => 2);

# tensor parallelism: two shards, an all-reduce after the attention
# output and the FFN down projection, on two emulated GPUs
for my $spec (['stories260K', 1e-3], ['tiny-llama3-f32', 1e-3],
              ['tiny-qwen3-q4_k_m', 5e-2]) {
    my ($m, $tol) = @$spec;
    my $ref = ref_of($m);
    my @greedy = @{$ref->{greedy_tokens}};
    my $toks = join ',', @{$ref->{prompt_tokens}}, @greedy[0 .. $#greedy - 1];
    my ($out, $err, $st) = run(\%two, $E, 'logits', '--model',
                               "$F/models/$m.gguf", '--tokens', $toks,
                               '--backend', 'cuda', '--tp', '2');
    is($st, 0, "$m: logits on two emulated GPUs") or diag($err);
    my $got = eval { decode_json($out)->{logits} } // [];
    my $worst = 0;
    for my $i (0 .. $#{$ref->{logits}}) {
        my $e = rel_l2($got->[$i] // [], $ref->{logits}[$i]);
        $worst = $e if $e > $worst;
    }
    ok(@$got == @{$ref->{logits}} && $worst <= $tol,
       sprintf("$m: --tp 2 within %g of llama.cpp's logits (worst %.3g)",
               $tol, $worst));

    my @gen = ('generate', '--model', "$F/models/$m.gguf", '--prompt',
               'Once upon a time', '--temperature', '0', '--max-tokens',
               '24');
    my ($want) = run({}, $CPU, @gen, '--backend', 'cpu');
    ($out, $err, $st) = run(\%two, $E, @gen, '--backend', 'cuda', '--tp', '2');
    ok($st == 0 && $out eq $want && length($want) > 0,
       "$m: --tp 2 on the GPUs writes the CPU's greedy text") or diag($err);
}

# the decode steps of a group run as CUDA graphs on both GPUs, their
# all-reduces recorded in them
{
    my ($out, $err, $st) = run({ %two, LLM_EMU_TRACE => 1 }, $E, 'generate',
                               '--model', "$F/models/stories260K.gguf",
                               '--prompt', 'Once upon a time',
                               '--temperature', '0', '--max-tokens', '8',
                               '--backend', 'cuda', '--tp', '2');
    my %cap;
    $cap{$1}++
        while $err =~ /^llm-emu: launch \S+ .*device (\d) \(captured\)$/mg;
    my $nccl = () = $err =~ /^llm-emu: ncclAllReduce .* \(captured\)$/mg;
    ok($st == 0 && ($cap{0} // 0) > 0 && ($cap{1} // 0) > 0 && $nccl > 0,
       sprintf('--tp 2 records graphs on both GPUs (%d and %d launches, '
               . '%d all-reduces)', $cap{0} // 0, $cap{1} // 0, $nccl));
}

# memory: a device with 200 MiB holds a 13 MB model (the weights'
# arena no longer wants 256 MiB at once); 40 MiB does not, and says so
my $m = "$F/models/tiny-llama3-f32.gguf";
my @gen = ('generate', '--model', $m, '--prompt', 'Once', '--temperature',
           '0', '--max-tokens', '8');
my ($want) = run({}, $CPU, @gen, '--backend', 'cpu');
my ($out, $err, $st) = run({ LLM_EMU_MEM_MB => 200 }, $E, @gen,
                           '--backend', 'cuda');
ok($st == 0 && $out eq $want, 'a 200 MiB device runs a 13 MB model')
    or diag($err);

($out, $err, $st) = run({ LLM_EMU_MEM_MB => 40 }, $E, @gen, '--backend',
                        'cuda');
is($st >> 8, 1, "a 40 MiB device: exit 1, no crash")
    or diag("status $st: $err");
my $no_room = 'llm-engine: cuda device 0: no room for \d+ bytes of weights '
              . '\(out of memory\)';
like($err, qr/^$no_room$/m, 'with one line saying what did not fit');

# no device: cuda refuses, auto computes on the CPU
($out, $err, $st) = run({ LLM_EMU_GPUS => 0 }, $E, @gen, '--backend',
                        'cuda');
ok($st >> 8 == 1 && $err =~ /no usable CUDA device/,
   '--backend cuda without a device: exit 1 and why');
($out, $err, $st) = run({ LLM_EMU_GPUS => 0 }, $E, @gen, '--backend',
                        'auto');
ok($st == 0 && $out eq $want && $err =~ /computing on the CPU/,
   '--backend auto without a device: the CPU, said in the log');

done_testing();
