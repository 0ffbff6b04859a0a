# Non-streaming completions and the models list, over HTTP through a real
# nginx and a real engine on the shipped model.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $ref = ', there was a little girl named Lily. She loved to play outside'
        . ' in the p';

my $t = LLMTest->new;
$t->start_engine;
$t->start_nginx;
ok($t->wait_ready, 'workers attached to the engine');

my $r = $t->get('/v1/models');
is($r->{status}, 200, 'GET /v1/models');
is($r->{json}{object}, 'list', 'models: a list');
is_deeply([ map { $_->{id} } @{ $r->{json}{data} } ], ['stories'],
          'models: the served model');
is($r->{json}{data}[0]{object}, 'model', 'models: entries are models');

$r = $t->post('/v1/completions', {
    model => 'stories', prompt => 'Once upon a time', max_tokens => 24,
    temperature => 0 });
is($r->{status}, 200, 'greedy completion: 200');
like($r->{headers}{'content-type'}, qr{^application/json}, 'JSON body');
my $j = $r->{json};
is($j->{object}, 'text_completion', 'object is text_completion');
like($j->{id}, qr/^cmpl-/, 'id starts with cmpl-');
is($j->{model}, 'stories', 'model named');
ok($j->{created} > 1_600_000_000, 'created is a unix time');
is($j->{choices}[0]{text}, $ref, 'greedy text equals the reference');
is($j->{choices}[0]{index}, 0, 'choice index');
is($j->{choices}[0]{finish_reason}, 'length', 'finish_reason length');
is($j->{usage}{prompt_tokens}, 5, 'usage: 5 prompt tokens (with BOS)');
is($j->{usage}{completion_tokens}, 24, 'usage: 24 completion tokens');
is($j->{usage}{total_tokens}, 29, 'usage: total');

# the same request again, and under another location prefix
my $r2 = $t->post('/v1/completions', {
    model => 'stories', prompt => 'Once upon a time', max_tokens => 24,
    temperature => 0 });
is($r2->{json}{choices}[0]{text}, $ref, 'greedy is repeatable');

# sampling: same seed, same text; another seed, another text
my %req = (model => 'stories', prompt => 'Once upon a time',
           max_tokens => 40, temperature => 1.0, top_p => 0.95);
my @texts = map {
    $t->post('/v1/completions', { %req, seed => $_ })->{json}{choices}[0]{text}
} (42, 42, 7);
ok(defined $texts[0] && length $texts[0], 'sampled text');
is($texts[1], $texts[0], 'the same seed gives the same text');
isnt($texts[2], $texts[0], 'another seed gives another text');

# max_tokens defaults to the OpenAI default and stops early on EOS
$r = $t->post('/v1/completions', { model => 'stories', prompt => 'Once',
                                   max_tokens => 1, temperature => 0 });
is($r->{json}{usage}{completion_tokens}, 1, 'max_tokens 1 gives one token');

# concurrent requests all get the reference
my @pids;
for my $i (1 .. 6) {
    my $pid = fork;
    if ($pid == 0) {
        my $x = $t->post('/v1/completions', {
            model => 'stories', prompt => 'Once upon a time',
            max_tokens => 24, temperature => 0 });
        my $got = $x->{json}{choices}[0]{text} // '';
        exit($got eq $ref ? 0 : 1);
    }
    push @pids, $pid;
}
my $bad = 0;
for (@pids) { waitpid($_, 0); $bad++ if $? }
is($bad, 0, 'six concurrent greedy requests all give the reference');

is_deeply([ $t->bad_log_lines ], [], 'no errors in the nginx log');

done_testing;
