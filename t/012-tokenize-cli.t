# llm-engine tokenize on every vocabulary in the fixtures: each test
# string of X.gguf.inp, written to a file of its own, must give exactly
# its line of X.gguf.out (no BOS, special tokens not parsed).  Then the
# errors for a tokenizer model or pre-tokenizer the engine lacks.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $E = $LLMTest::ENGINE;
my $V = "$LLMTest::FIXTURES/vocab";
my $SEP = "\n__ggml_vocab_test__\n";

plan skip_all => "no vocabulary fixtures in $V" unless -d $V;

my $dir = LLMTest->new->dir;

# runs the engine without a shell; returns stdout, stderr and status
sub engine {
    my (@args) = @_;
    my $err = "$dir/stderr";
    my $pid = open(my $fh, '-|') // die "fork: $!";
    if ($pid == 0) {
        open STDERR, '>', $err or die;
        exec $E, @args or die "exec $E: $!";
    }
    my $out = do { local $/; <$fh> } // '';
    close $fh;
    my $st = $?;
    my $e = LLMTest::slurp($err);
    return ($out, $e, $st);
}

my @vocabs = sort grep { -f "$_.inp" && -f "$_.out" } glob "$V/*.gguf";
cmp_ok(scalar @vocabs, '>=', 8, 'the vocabularies with test strings');

for my $vocab (@vocabs) {
    (my $name = $vocab) =~ s{.*/|\.gguf$}{}g;

    my $inp = LLMTest::slurp("$vocab.inp");
    my @want = split /\n/, LLMTest::slurp("$vocab.out"), -1;
    pop @want if @want && $want[-1] eq '';

    # each string is followed by the separator
    my @strings;
    while ((my $i = index($inp, $SEP)) >= 0) {
        push @strings, substr($inp, 0, $i);
        $inp = substr($inp, $i + length $SEP);
    }

    is(scalar @strings, scalar @want, "$name: as many strings as lines");

    my ($same, @bad) = (0);
    for my $k (0 .. $#strings) {
        my $f = "$dir/string";
        open my $fh, '>:raw', $f or die "$f: $!";
        print $fh $strings[$k];
        close $fh;

        my ($out, $err, $st) = engine('tokenize', '--model', $vocab,
                                      '--no-bos', '--file', $f);
        chomp $out;
        (my $w = $want[$k] // '') =~ s/^ //;

        if ($st == 0 && $out eq $w) {
            $same++;
        } else {
            push @bad, "string $k: got '$out', want '$w' $err";
        }
    }

    is($same, scalar @strings,
       "$name: $same of " . scalar(@strings) . " strings tokenize as "
       . "expected") or diag join "\n", @bad[0 .. ($#bad < 4 ? $#bad : 4)];
}

# a vocabulary the engine cannot tokenize: one line naming what it lacks
my $gpt2 = LLMTest::slurp("$V/ggml-vocab-gpt-2.gguf");
my %bad = (
    model => [ 'tokenizer.ggml.model', 'gpt2', 'bert' ],
    pre => [ 'tokenizer.ggml.pre', 'gpt-2', 'gpt-9' ],
);
for my $what (sort keys %bad) {
    my ($key, $from, $to) = @{ $bad{$what} };
    my $kv = pack('Q<', length $key) . $key . pack('V', 8)
             . pack('Q<', length $from);
    my $bytes = $gpt2;
    my $at = index($bytes, $kv . $from);
    ok($at >= 0, "$what: found $key in the file") or next;
    substr($bytes, $at + length $kv, length $from) = $to;

    my $f = "$dir/$what.gguf";
    open my $fh, '>:raw', $f or die "$f: $!";
    print $fh $bytes;
    close $fh;

    my ($out, $err, $st) = engine('tokenize', '--model', $f, '--text', 'x');
    ok(($st & 127) == 0 && ($st >> 8) != 0, "$what '$to': non-zero exit");
    is(scalar(split /\n/, $err), 1, "$what '$to': one line of error");
    like($err, qr/'\Q$to\E'/, "$what '$to': the error names it")
        or diag $err;
}

done_testing;
