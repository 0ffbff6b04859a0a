# POST /v1/completions through a real nginx and engine: the response
# object, every request parameter (each checked by its effect on the
# shipped model's output), the forms of "prompt", n, logprobs, and
# streaming with stream_options.include_usage.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $ref = ', there was a little girl named Lily. She loved to play outside'
        . ' in the p';

# "Once upon a time" and "Lily" as the engine tokenizes them, with BOS
my @once = (1, 403, 407, 261, 378);
my @lily = (1, 317);

my $t = LLMTest->new;
$t->start_engine;
$t->start_nginx(server => "location /v1/ { llm_pass default;"
                          . " llm_max_tokens 128; llm_max_n 4; }");
ok($t->wait_ready, 'workers attached');

sub complete {
    my (%b) = @_;
    return $t->post('/v1/completions', {
        model => 'stories', prompt => 'Once upon a time', temperature => 0,
        max_tokens => 24, %b });
}

sub text { $_[0]{json}{choices}[0]{text} }

# --- the response object -------------------------------------------------
my $r = complete();
is($r->{status}, 200, 'completion: 200');
my $j = $r->{json};
is($j->{object}, 'text_completion', 'object');
like($j->{id}, qr/^cmpl-[0-9a-f]+$/, 'id');
like($j->{created}, qr/^\d+$/, 'created is an integer');
ok(abs($j->{created} - time) < 600, 'created is about now');
is($j->{model}, 'stories', 'model');
is($r->{headers}{'x-llm-model'}, 'stories', 'X-LLM-Model header');
is(scalar @{ $j->{choices} }, 1, 'one choice');
is(text($r), $ref, 'greedy text equals the reference');
is($j->{choices}[0]{index}, 0, 'index');
ok(exists $j->{choices}[0]{logprobs} && !defined $j->{choices}[0]{logprobs},
   'logprobs null unless asked');
is($j->{choices}[0]{finish_reason}, 'length', 'finish_reason length');
is($j->{usage}{prompt_tokens}, 5, 'usage.prompt_tokens');
is($j->{usage}{completion_tokens}, 24, 'usage.completion_tokens');
is($j->{usage}{total_tokens}, 29, 'usage.total_tokens');
my $cached = $j->{usage}{prompt_tokens_details}{cached_tokens};
ok(defined $cached && $cached >= 0 && $cached <= 5,
   'usage.prompt_tokens_details.cached_tokens (' . ($cached // '?') . ')');

# --- each parameter, by its effect ---------------------------------------
$r = complete(max_tokens => undef);
ok($r->{json}{usage}{completion_tokens} > 24
   && $r->{json}{usage}{completion_tokens} <= 128,
   'max_tokens defaults to llm_max_tokens');

is($t->post('/v1/completions', { model => 'stories', prompt => 'Once',
                                 max_tokens => 1 })->{json}{usage}
       {completion_tokens}, 1, 'max_tokens 1');

is(text(complete(temperature => 1, top_p => 0.01, seed => 3)), $ref,
   'top_p 0.01 keeps only the most likely token');

my @s = map { text(complete(temperature => 1.5, seed => $_)) } (5, 5, 6);
is($s[1], $s[0], 'seed: the same seed gives the same text');
isnt($s[2], $s[0], 'seed: another seed gives another text');
isnt($s[0], $ref, 'temperature 1.5 samples away from greedy');

$r = complete(stop => 'girl');
is(text($r), ', there was a little ', 'stop as a string');
is($r->{json}{choices}[0]{finish_reason}, 'stop', 'stop: finish_reason stop');
is(text(complete(stop => ['Lily', 'little'])), ', there was a ',
   'stop as a list, the first match wins');
is(text(complete(stop => [])), $ref, 'an empty stop list is no stop');

my $long = text(complete(max_tokens => 100));
isnt(text(complete(max_tokens => 100, presence_penalty => 2)), $long,
     'presence_penalty changes the text');
isnt(text(complete(max_tokens => 100, frequency_penalty => 2)), $long,
     'frequency_penalty changes the text');
isnt(text(complete(max_tokens => 100, frequency_penalty => -2)), $long,
     'a negative frequency_penalty changes the text');

$r = complete(logit_bias => { 400 => 100 }, max_tokens => 4, logprobs => 0);
my $toks = $r->{json}{choices}[0]{logprobs}{tokens};
ok(@$toks == 4 && !grep({ $_ ne $toks->[0] } @$toks),
   'logit_bias +100 makes one token win every time') or diag explain $toks;
isnt(text($r), substr($ref, 0, length text($r)), 'logit_bias changes text');

is(text(complete(user => 'user-1234')), $ref, 'user is accepted');
is(text(complete(echo => JSON::PP::false, best_of => 1, suffix => undef,
                 nosuch => { deep => [1] })), $ref,
   'unknown fields are ignored');

# --- prompt forms -----------------------------------------------------------
is(text(complete(prompt => \@once)), $ref,
   'prompt as token ids gives the same text as the string');
is(complete(prompt => \@once)->{json}{usage}{prompt_tokens}, 5,
   'token ids: usage counts them');

$r = complete(prompt => ['Once upon a time', 'Lily']);
is(scalar @{ $r->{json}{choices} }, 2, 'a list of prompts: one choice each');
is($r->{json}{choices}[0]{text}, $ref, 'list: the first prompt');
is($r->{json}{choices}[1]{text}, text(complete(prompt => 'Lily')),
   'list: the second prompt as if alone');
is_deeply([ map { $_->{index} } @{ $r->{json}{choices} } ], [0, 1],
          'list: indexes');
is($r->{json}{usage}{prompt_tokens}, 7, 'list: prompt tokens of both');
is($r->{json}{usage}{completion_tokens}, 48, 'list: completion tokens');

$r = complete(prompt => [\@once, \@lily]);
is_deeply([ map { $_->{text} } @{ $r->{json}{choices} } ],
          [ $ref, text(complete(prompt => 'Lily')) ],
          'a list of token id lists');

# --- n ----------------------------------------------------------------------
my %sample = (temperature => 1.2, max_tokens => 16);
$r = complete(%sample, n => 3, seed => 11);
my @c = @{ $r->{json}{choices} // [] };
is(scalar @c, 3, 'n 3: three choices');
is_deeply([ map { $_->{index} } @c ], [0, 1, 2], 'n: indexes 0..2');
is_deeply([ map { $_->{text} } @c ],
          [ map { text(complete(%sample, seed => $_)) } (11, 12, 13) ],
          'n: choice k is the request with seed + k');
is($r->{json}{usage}{prompt_tokens}, 5, 'n: the prompt is counted once');
is($r->{json}{usage}{completion_tokens}, 48, 'n: completion tokens summed');

$r = complete(%sample, prompt => ['Once upon a time', 'Lily'], n => 2,
              seed => 21);
@c = @{ $r->{json}{choices} // [] };
is(scalar @c, 4, 'two prompts, n 2: four choices');
is($c[2]{text}, text(complete(%sample, prompt => 'Lily', seed => 21)),
   'choice 2 is the second prompt with the seed');
is($c[3]{text}, text(complete(%sample, prompt => 'Lily', seed => 22)),
   'choice 3 is the second prompt with seed + 1');
is($r->{json}{usage}{prompt_tokens}, 7, 'prompts counted once each');

# --- logprobs ---------------------------------------------------------------
$r = complete(max_tokens => 6, logprobs => 3);
my $lp = $r->{json}{choices}[0]{logprobs};
is(ref $lp, 'HASH', 'logprobs: an object');
is(scalar @{ $lp->{tokens} }, 6, 'logprobs: one entry per token');
is(join('', @{ $lp->{tokens} }), text($r),
   'logprobs: the tokens spell the text');
ok(!grep({ $_ > 0 } @{ $lp->{token_logprobs} }), 'logprobs are <= 0');
ok(!grep({ keys %$_ < 1 || keys %$_ > 3 } @{ $lp->{top_logprobs} }),
   'top_logprobs: 1 to 3 alternatives each');
my $off = 0;
my @want = map { my $o = $off; $off += length $_; $o } @{ $lp->{tokens} };
is_deeply($lp->{text_offset}, \@want, 'text_offset');
my $greedy_top = 1;
for my $i (0 .. $#{ $lp->{tokens} }) {
    my $top = $lp->{top_logprobs}[$i];
    my ($best) = sort { $top->{$b} <=> $top->{$a} } keys %$top;
    $greedy_top = 0 unless $best eq $lp->{tokens}[$i];
}
ok($greedy_top, 'greedy: each token is its most likely alternative');

$lp = complete(max_tokens => 2, logprobs => 0)->{json}{choices}[0]{logprobs};
is_deeply($lp->{top_logprobs}, [{}, {}], 'logprobs 0: no alternatives');

# --- streaming ----------------------------------------------------------------
$r = $t->post_stream('/v1/completions', {
    model => 'stories', prompt => 'Once upon a time', max_tokens => 24,
    temperature => 0, stream_options => { include_usage => JSON::PP::true } });
my @ev = @{ $r->{events} };
is($ev[-1], '[DONE]', 'stream ends with [DONE]');
my @data = grep { ref } @ev;
my $usage = $data[-1];
is_deeply($usage->{choices}, [],
          'include_usage: the last chunk has no choices');
is($usage->{usage}{completion_tokens}, 24, 'include_usage: usage');
is($usage->{usage}{prompt_tokens}, 5, 'include_usage: prompt tokens');
is((grep { exists $_->{usage} && !defined $_->{usage} } @data[0 .. $#data - 1]),
   $#data, 'include_usage: usage null in the other chunks');
is(join('', map { $_->{choices}[0]{text} // '' } @data[0 .. $#data - 1]),
   $ref, 'streamed text');
is($data[-2]{choices}[0]{finish_reason}, 'length',
   'finish_reason in the stream');

$r = $t->post_stream('/v1/completions', {
    model => 'stories', prompt => 'Once upon a time', max_tokens => 24,
    temperature => 0, n => 2 });
@data = grep { ref } @{ $r->{events} };
ok(!grep({ exists $_->{usage} } @data), 'no usage unless asked');
for my $i (0, 1) {
    my @mine = grep { $_->{choices}[0]{index} == $i } @data;
    is(join('', map { $_->{choices}[0]{text} } @mine), $ref,
       "stream n 2: choice $i");
    is($mine[-1]{choices}[0]{finish_reason}, 'length',
       "stream n 2: choice $i ends");
}

$r = $t->post_stream('/v1/completions', {
    model => 'stories', prompt => 'Once upon a time', max_tokens => 8,
    temperature => 0, logprobs => 1 });
@data = grep { ref } @{ $r->{events} };
my @lt = map { @{ ($_->{choices}[0]{logprobs} // {})->{tokens} // [] } } @data;
is(scalar @lt, 8, 'stream logprobs: one entry per token');
is(join('', @lt), join('', map { $_->{choices}[0]{text} } @data),
   'stream logprobs: tokens spell the streamed text');

is_deeply([ $t->bad_log_lines ], [], 'no errors in the nginx log');

done_testing;
