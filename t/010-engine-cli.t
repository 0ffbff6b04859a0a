# The engine's command-line interface: tokenize, generate and logits on
# the shipped model, checked against llama.cpp's reference outputs in the
# fixtures; a malformed model file is a one-line error.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $E = $LLMTest::ENGINE;
my $M = $LLMTest::MODEL;
my $F = $LLMTest::FIXTURES;

my $p0 = LLMTest->json->decode(LLMTest::slurp("$F/ref/stories260K.p0.json"));

my $out = `$E tokenize --model $M --text 'Once upon a time'`;
is($?, 0, 'tokenize exits 0');
is($out, join(' ', @{ $p0->{prompt_tokens} }) . "\n",
   'tokenize with BOS equals llama.cpp');

$out = `$E tokenize --model $M --no-bos --text 'Once upon a time'`;
my @ids = @{ $p0->{prompt_tokens} };
shift @ids;
is($out, "@ids\n", 'tokenize --no-bos');

$out = `$E generate --model $M --prompt 'Once upon a time' --max-tokens 24 --temperature 0`;
is($?, 0, 'generate exits 0');
is($out, ", there was a little girl named Lily. She loved to play outside"
         . " in the p\n", 'greedy generate equals the reference');

# logits for the prompt plus the greedy tokens but the last
my @tok = (@{ $p0->{prompt_tokens} }, @{ $p0->{greedy_tokens} });
pop @tok;
$out = `$E logits --model $M --tokens @{[ join ',', @tok ]}`;
is($?, 0, 'logits exits 0');
my $got = eval { LLMTest->json->decode($out) };
ok($got, 'logits prints JSON') or diag substr($out, 0, 200);
is($got->{n_vocab}, 512, 'n_vocab');
is(scalar @{ $got->{logits} }, scalar @tok, 'one row per position');

my ($worst, $argmax_ok) = (0, 0);
for my $i (0 .. $#tok) {
    my ($a, $b) = ($got->{logits}[$i], $p0->{logits}[$i]);
    my ($d, $n, $ia, $ib) = (0, 0, 0, 0);
    for my $k (0 .. $#$b) {
        $d += ($a->[$k] - $b->[$k]) ** 2;
        $n += $b->[$k] ** 2;
        $ia = $k if $a->[$k] > $a->[$ia];
        $ib = $k if $b->[$k] > $b->[$ib];
    }
    my $rel = sqrt($d) / sqrt($n);
    $worst = $rel if $rel > $worst;
    $argmax_ok++ if $ia == $ib;
}
cmp_ok($worst, '<=', 1e-3, "logits within 1e-3 rel. L2 (worst $worst)");
is($argmax_ok, scalar @tok, 'argmax equal on every row');

# malformed model files: one line on stderr, a clean non-zero exit
my $dir = LLMTest->new->dir;
open my $in, '<:raw', $M or die;
my $bytes = do { local $/; <$in> };
close $in;
my %bad = (
    truncated => substr($bytes, 0, 1000),
    empty => '',
    'bad-magic' => 'XXXX' . substr($bytes, 4),
);
for my $name (sort keys %bad) {
    open my $fh, '>:raw', "$dir/$name.gguf" or die;
    print $fh $bad{$name};
    close $fh;
    my $err = `$E generate --model $dir/$name.gguf --prompt x --max-tokens 1 2>&1 >/dev/null`;
    my $st = $?;
    ok(($st & 127) == 0 && ($st >> 8) != 0, "$name: non-zero exit, no signal");
    my @lines = split /\n/, $err;
    is(scalar @lines, 1, "$name: one line of error") or diag $err;
    like($err, qr/\Q$name.gguf\E/, "$name: the error names the file");
}

$out = `$E generate --model /nonexistent.gguf --prompt x 2>&1`;
isnt($?, 0, 'a missing file fails');
like($out, qr{/nonexistent\.gguf}, 'and says which');

done_testing;
