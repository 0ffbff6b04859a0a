# POST /v1/chat/completions through a real nginx and engine: roles,
# content as a string or a list of text parts (the engine renders the
# model's chat template), the chat.completion object, chat parameters
# (max_completion_tokens, logprobs/top_logprobs, n, stop) and streaming
# chunks with deltas.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
$t->start_engine;
$t->start_nginx(server => "location /v1/ { llm_pass default;"
                          . " llm_max_tokens 64; }");
ok($t->wait_ready, 'workers attached');

my @hello = ({ role => 'user', content => 'Tell me a story.' });

sub chat {
    my (%b) = @_;
    return $t->post('/v1/chat/completions', {
        model => 'stories', messages => \@hello, temperature => 0,
        max_tokens => 16, %b });
}

sub content { $_[0]{json}{choices}[0]{message}{content} }

# --- the response object -------------------------------------------------
my $r = chat();
is($r->{status}, 200, 'chat: 200') or diag $r->{content};
my $j = $r->{json};
is($j->{object}, 'chat.completion', 'object');
like($j->{id}, qr/^chatcmpl-[0-9a-f]+$/, 'id');
like($j->{created}, qr/^\d+$/, 'created');
is($j->{model}, 'stories', 'model');
is($r->{headers}{'x-llm-model'}, 'stories', 'X-LLM-Model');
is($j->{choices}[0]{index}, 0, 'index');
is($j->{choices}[0]{message}{role}, 'assistant', 'message.role');
ok(defined content($r) && length content($r), 'message.content');
is($j->{choices}[0]{finish_reason}, 'length', 'finish_reason');
ok(exists $j->{choices}[0]{logprobs} && !defined $j->{choices}[0]{logprobs},
   'logprobs null unless asked');
is($j->{usage}{completion_tokens}, 16, 'usage.completion_tokens');
ok($j->{usage}{prompt_tokens} > 5, 'usage.prompt_tokens: a rendered prompt');
is($j->{usage}{total_tokens},
   $j->{usage}{prompt_tokens} + $j->{usage}{completion_tokens}, 'total');
ok(defined $j->{usage}{prompt_tokens_details}{cached_tokens},
   'usage.prompt_tokens_details.cached_tokens');
my $greedy = content($r);
is(content(chat()), $greedy, 'greedy chat is repeatable');

# --- messages -------------------------------------------------------------
my @conv = ({ role => 'system', content => 'You tell stories.' },
            { role => 'user', content => 'Hello' },
            { role => 'assistant', content => 'Hi. What story?' },
            { role => 'user', content => 'One about a cat.' });
$r = chat(messages => \@conv);
is($r->{status}, 200, 'system, user and assistant roles');
ok($r->{json}{usage}{prompt_tokens} > $j->{usage}{prompt_tokens},
   'a longer conversation is a longer prompt');

my $parts = chat(messages => [{ role => 'user', content => [
    { type => 'text', text => 'Tell me' },
    { type => 'text', text => 'a story.' } ] }]);
my $joined = chat(messages => [{ role => 'user',
                                 content => "Tell me\na story." }]);
is($parts->{status}, 200, 'content as a list of text parts');
is(content($parts), content($joined), 'parts are joined by newlines');
is($parts->{json}{usage}{prompt_tokens}, $joined->{json}{usage}{prompt_tokens},
   'parts: the same prompt as the joined string');

is(content(chat(messages => [{ role => 'developer', content => 'Be kind.' },
                             @hello ])),
   content(chat(messages => [{ role => 'system', content => 'Be kind.' },
                             @hello ])),
   'developer is the system role');

is(chat(messages => [@hello, { role => 'assistant', content => undef },
                     { role => 'user', content => 'More.' }])->{status},
   200, 'an assistant message with null content');

is(chat(messages => [{ role => 'user', content => 'Hi', name => 'bob' }])
       ->{status}, 200, 'unknown message fields are ignored');

# --- parameters -----------------------------------------------------------
is(chat(max_tokens => undef, max_completion_tokens => 3)->{json}{usage}
       {completion_tokens}, 3, 'max_completion_tokens');
is(chat(max_tokens => 10, max_completion_tokens => 4)->{json}{usage}
       {completion_tokens}, 4, 'max_completion_tokens wins over max_tokens');

my @s = map { content(chat(temperature => 1.5, seed => $_)) } (8, 8, 9);
is($s[1], $s[0], 'seed: same text');
isnt($s[2], $s[0], 'seed: another text');

$r = chat(n => 2, temperature => 1.5, seed => 8);
is(scalar @{ $r->{json}{choices} }, 2, 'n 2');
is($r->{json}{choices}[0]{message}{content}, $s[0], 'n: choice 0 is seed');
is($r->{json}{choices}[1]{message}{content}, $s[2], 'n: choice 1 is seed + 1');

my $cut = substr($greedy, 2, 3);
$r = chat(stop => [$cut]);
is(content($r), substr($greedy, 0, index($greedy, $cut)), 'stop');
is($r->{json}{choices}[0]{finish_reason}, 'stop', 'stop: finish_reason');

$r = chat(logprobs => JSON::PP::true, top_logprobs => 2, max_tokens => 5);
my $lp = $r->{json}{choices}[0]{logprobs}{content};
is(ref $lp, 'ARRAY', 'logprobs.content');
is(scalar @$lp, 5, 'one entry per token');
is(join('', map { $_->{token} } @$lp), content($r), 'tokens spell the content');
ok(!grep({ $_->{logprob} > 0 } @$lp), 'logprob <= 0');
ok(!grep({ pack('C*', @{ $_->{bytes} }) ne do { my $x = $_->{token};
                                                 utf8::encode($x); $x } }
         @$lp), 'bytes are the token\'s UTF-8');
ok(!grep({ @{ $_->{top_logprobs} } != 2 } @$lp), 'two alternatives each');
ok(!grep({ !defined $_->{top_logprobs}[0]{bytes} } @$lp),
   'alternatives have bytes');
is($lp->[0]{top_logprobs}[0]{token}, $lp->[0]{token},
   'greedy: the token is the most likely alternative');

$lp = chat(logprobs => JSON::PP::true, max_tokens => 2)->{json}{choices}[0]
          {logprobs}{content};
is_deeply([ map { $_->{top_logprobs} } @$lp ], [[], []],
          'logprobs without top_logprobs: no alternatives');

is(content(chat(user => 'u-1', presence_penalty => 0, frequency_penalty => 0,
                logit_bias => {}, top_p => 1, response_format => {},
                nosuch => 1)), $greedy, 'neutral parameters and unknown '
                                        . 'fields change nothing');

# --- streaming --------------------------------------------------------------
$r = $t->post_stream('/v1/chat/completions', {
    model => 'stories', messages => \@hello, temperature => 0,
    max_tokens => 16, stream_options => { include_usage => JSON::PP::true } });
is($r->{status}, 200, 'stream: 200');
like($r->{headers}{'content-type'}, qr{^text/event-stream}, 'event stream');
my @ev = @{ $r->{events} };
is($ev[-1], '[DONE]', '[DONE]');
my @data = grep { ref } @ev;
is((grep { $_->{object} ne 'chat.completion.chunk' } @data), 0,
   'every chunk is a chat.completion.chunk');
is($data[0]{choices}[0]{delta}{role}, 'assistant',
   'the first delta has the role');
is((grep { exists $_->{choices}[0] && exists $_->{choices}[0]{delta}{role} }
        @data[1 .. $#data]), 0, 'later deltas do not');
my @content = grep { exists $_->{choices}[0] } @data;
is(join('', map { $_->{choices}[0]{delta}{content} // '' } @content),
   $greedy, 'streamed content equals the non-streamed');
is_deeply($content[-1]{choices}[0]{delta}, {}, 'the last delta is empty');
is($content[-1]{choices}[0]{finish_reason}, 'length', 'with finish_reason');
is_deeply($data[-1]{choices}, [], 'usage chunk: no choices');
is($data[-1]{usage}{completion_tokens}, 16, 'usage chunk: usage');

$r = $t->post_stream('/v1/chat/completions', {
    model => 'stories', messages => \@hello, temperature => 0,
    max_tokens => 4, logprobs => JSON::PP::true, top_logprobs => 1 });
@data = grep { ref } @{ $r->{events} };
my @tok = map { @{ ($_->{choices}[0]{logprobs} // {})->{content} // [] } }
          @data;
is(scalar @tok, 4, 'stream logprobs: one entry per token');
is(join('', map { $_->{token} } @tok),
   join('', map { $_->{choices}[0]{delta}{content} // '' } @data),
   'stream logprobs spell the content');

is_deeply([ $t->bad_log_lines ], [], 'no errors in the nginx log');

done_testing;
