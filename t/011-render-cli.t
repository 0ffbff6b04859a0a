# llm-engine render: every chat fixture case through the command line,
# byte-identical to jinja2's rendering or failing with its message.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;
use Encode ();

my $E = $LLMTest::ENGINE;
my @files = glob("$LLMTest::FIXTURES/chat/*.json");
plan skip_all => 'no chat fixtures' unless @files;

my $dir = LLMTest->new->dir;
my $n = 0;

for my $file (@files) {
    my $fx = LLMTest->json->decode(LLMTest::slurp($file));
    my $tpl = "$dir/t.jinja";
    open my $fh, '>:raw', $tpl or die;
    print $fh $fx->{template_text};
    close $fh;

    for my $case (@{ $fx->{cases} }) {
        my $msgs = "$dir/m.json";
        open $fh, '>:raw', $msgs or die;
        print $fh LLMTest->json->encode($case->{messages});
        close $fh;

        my @cmd = ($E, 'render', '--template', $tpl, '--messages', "\@$msgs",
                   '--bos', $fx->{bos_token} // '',
                   '--eos', $fx->{eos_token} // '',
                   '--date', $fx->{date} // '15 Jan 2026');
        push @cmd, '--no-generation-prompt' unless $case->{add_generation_prompt};

        my $pid = open(my $out, '-|');
        if ($pid == 0) {
            open STDERR, '>', "$dir/err" or die;
            exec @cmd or die;
        }
        binmode $out;
        my $got = do { local $/; <$out> } // '';
        close $out;
        my $rc = $? >> 8;
        my $name = "$fx->{template} case " . ++$n;

        if (defined $case->{expected}) {
            is($rc, 0, "$name: renders");
            ok($got eq Encode::encode('UTF-8', $case->{expected}),
               "$name: byte-identical to jinja2");
        } else {
            is($rc, 1, "$name: refused");
            my $err = LLMTest::slurp("$dir/err");
            chomp $err;
            is(Encode::decode('UTF-8', $err), $case->{error},
               "$name: with the template's own message");
        }
    }
}

done_testing;
