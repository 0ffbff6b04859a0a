# Errors of the OpenAI API: every parameter of the wrong type or out of
# range is a 400 that names it, an unknown model is a 404, bodies too
# large are a 413 (also when nginx itself refuses them), limit_req's
# 429 and other pages nginx makes in an llm location are OpenAI error
# objects too.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
$t->start_engine;
$t->start_nginx(
    http => 'limit_req_zone $binary_remote_addr zone=one:1m rate=1r/m;',
    server => <<'CONF');
        location /v1/ {
            llm_pass default;
            llm_max_tokens 64;
            llm_max_n 4;
            client_max_body_size 1m;
            client_body_buffer_size 512k;
        }
        location /small/v1/ {
            llm_pass default;
            client_max_body_size 1k;
        }
        location /limited/v1/ {
            llm_pass default;
            limit_req zone=one nodelay;
            limit_req_status 429;
        }
        location /broken/v1/ {
            llm_pass default;
            return 502;
        }
        location = /plain404 {
            return 404;
        }
CONF
ok($t->wait_ready, 'workers attached');

my %ok = (model => 'stories', prompt => 'Once upon a time', max_tokens => 4,
          temperature => 0);
my %chat = (model => 'stories', max_tokens => 4, temperature => 0,
            messages => [{ role => 'user', content => 'Hi' }]);
my $T = JSON::PP::true;

# [ name, body, param, code ]
my @completions = (
    [ 'prompt missing', { %ok, prompt => undef }, 'prompt',
      'missing_required_parameter' ],
    [ 'prompt an object', { %ok, prompt => {} }, 'prompt', 'invalid_type' ],
    [ 'prompt an empty list', { %ok, prompt => [] }, 'prompt',
      'invalid_value' ],
    [ 'prompt mixes ids and text', { %ok, prompt => [1, 'a'] }, 'prompt',
      'invalid_type' ],
    [ 'prompt mixes lists and text', { %ok, prompt => [[1], 'a'] }, 'prompt',
      'invalid_type' ],
    [ 'prompt an empty id list', { %ok, prompt => [[]] }, 'prompt',
      'invalid_value' ],
    [ 'prompt a negative id', { %ok, prompt => [1, -1] }, 'prompt',
      'invalid_value' ],
    [ 'prompt a fractional id', { %ok, prompt => [1, 2.5] }, 'prompt',
      'invalid_type' ],
    [ 'prompt of 129 strings', { %ok, prompt => [('a') x 129] }, 'prompt',
      'invalid_value' ],
    [ 'model missing', { %ok, model => undef }, 'model',
      'missing_required_parameter' ],
    [ 'model a list', { %ok, model => ['stories'] }, 'model',
      'invalid_type' ],
    [ 'max_tokens a string', { %ok, max_tokens => '4' }, 'max_tokens',
      'invalid_type' ],
    [ 'max_tokens over llm_max_tokens', { %ok, max_tokens => 65 },
      'max_tokens', 'invalid_value' ],
    [ 'max_completion_tokens a number', { %ok, max_completion_tokens => 1.5 },
      'max_completion_tokens', 'invalid_type' ],
    [ 'max_completion_tokens zero', { %ok, max_completion_tokens => 0 },
      'max_completion_tokens', 'invalid_value' ],
    [ 'max_completion_tokens over the cap',
      { %ok, max_completion_tokens => 100 }, 'max_completion_tokens',
      'invalid_value' ],
    [ 'temperature a string', { %ok, temperature => '0' }, 'temperature',
      'invalid_type' ],
    [ 'temperature 2.5', { %ok, temperature => 2.5 }, 'temperature',
      'invalid_value' ],
    [ 'top_p a boolean', { %ok, top_p => $T }, 'top_p', 'invalid_type' ],
    [ 'top_p 0', { %ok, top_p => 0 }, 'top_p', 'invalid_value' ],
    [ 'top_p 1.5', { %ok, top_p => 1.5 }, 'top_p', 'invalid_value' ],
    [ 'n a string', { %ok, n => '2' }, 'n', 'invalid_type' ],
    [ 'n zero', { %ok, n => 0 }, 'n', 'invalid_value' ],
    [ 'n over llm_max_n', { %ok, n => 5 }, 'n', 'invalid_value' ],
    [ 'prompts times n over 256', { %ok, n => 4, prompt => [('a') x 65] },
      'n', 'invalid_value' ],
    [ 'stop a number', { %ok, stop => 5 }, 'stop', 'invalid_type' ],
    [ 'stop a list of numbers', { %ok, stop => [1] }, 'stop',
      'invalid_type' ],
    [ 'stop of five strings', { %ok, stop => [qw(a b c d e)] }, 'stop',
      'invalid_value' ],
    [ 'seed a string', { %ok, seed => '1' }, 'seed', 'invalid_type' ],
    [ 'seed fractional', { %ok, seed => 1.5 }, 'seed', 'invalid_type' ],
    [ 'presence_penalty a string', { %ok, presence_penalty => 'x' },
      'presence_penalty', 'invalid_type' ],
    [ 'presence_penalty 3', { %ok, presence_penalty => 3 },
      'presence_penalty', 'invalid_value' ],
    [ 'frequency_penalty -2.5', { %ok, frequency_penalty => -2.5 },
      'frequency_penalty', 'invalid_value' ],
    [ 'frequency_penalty a list', { %ok, frequency_penalty => [] },
      'frequency_penalty', 'invalid_type' ],
    [ 'logit_bias a list', { %ok, logit_bias => [1] }, 'logit_bias',
      'invalid_type' ],
    [ 'logit_bias key not a token', { %ok, logit_bias => { abc => 1 } },
      'logit_bias', 'invalid_value' ],
    [ 'logit_bias negative token', { %ok, logit_bias => { -1 => 1 } },
      'logit_bias', 'invalid_value' ],
    [ 'logit_bias value a string', { %ok, logit_bias => { 5 => 'x' } },
      'logit_bias', 'invalid_type' ],
    [ 'logit_bias value 101', { %ok, logit_bias => { 5 => 101 } },
      'logit_bias', 'invalid_value' ],
    [ 'logprobs a boolean', { %ok, logprobs => $T }, 'logprobs',
      'invalid_type' ],
    [ 'logprobs 21', { %ok, logprobs => 21 }, 'logprobs', 'invalid_value' ],
    [ 'logprobs -1', { %ok, logprobs => -1 }, 'logprobs', 'invalid_value' ],
    [ 'user a number', { %ok, user => 5 }, 'user', 'invalid_type' ],
    [ 'stream a string', { %ok, stream => 'true' }, 'stream',
      'invalid_type' ],
    [ 'stream_options a string', { %ok, stream => $T, stream_options => 'x' },
      'stream_options', 'invalid_type' ],
    [ 'stream_options without stream',
      { %ok, stream_options => { include_usage => $T } }, 'stream_options',
      'invalid_value' ],
    [ 'include_usage a string',
      { %ok, stream => $T, stream_options => { include_usage => 'yes' } },
      'stream_options.include_usage', 'invalid_type' ],
);

for my $c (@completions) {
    my ($name, $body, $param, $code) = @$c;
    delete $body->{$_} for grep { !defined $body->{$_} } keys %$body;
    LLMTest::is_error($t->post('/v1/completions', $body), 400, $name,
                      type => 'invalid_request_error', param => $param,
                      code => $code);
}

my @chats = (
    [ 'messages missing', { %chat, messages => undef }, 'messages',
      'missing_required_parameter' ],
    [ 'messages a string', { %chat, messages => 'Hi' }, 'messages',
      'invalid_type' ],
    [ 'messages empty', { %chat, messages => [] }, 'messages',
      'invalid_value' ],
    [ 'a message not an object', { %chat, messages => ['Hi'] },
      'messages[0]', 'invalid_type' ],
    [ 'an unknown role',
      { %chat, messages => [{ role => 'user', content => 'a' },
                            { role => 'robot', content => 'b' }] },
      'messages[1].role', 'invalid_value' ],
    [ 'a role not a string', { %chat, messages => [{ role => 1 }] },
      'messages[0].role', 'invalid_type' ],
    [ 'content missing', { %chat, messages => [{ role => 'user' }] },
      'messages[0].content', 'invalid_type' ],
    [ 'content a number',
      { %chat, messages => [{ role => 'user', content => 5 }] },
      'messages[0].content', 'invalid_type' ],
    [ 'an image part',
      { %chat, messages => [{ role => 'user', content => [
            { type => 'image_url', image_url => { url => 'x' } }] }] },
      'messages[0].content', 'invalid_value' ],
    [ 'a text part without text',
      { %chat, messages => [{ role => 'user', content => [
            { type => 'text' }] }] },
      'messages[0].content', 'invalid_type' ],
    [ 'chat logprobs a number', { %chat, logprobs => 1 }, 'logprobs',
      'invalid_type' ],
    [ 'top_logprobs without logprobs', { %chat, top_logprobs => 2 },
      'top_logprobs', 'invalid_value' ],
    [ 'top_logprobs 21', { %chat, logprobs => $T, top_logprobs => 21 },
      'top_logprobs', 'invalid_value' ],
    [ 'top_logprobs a string', { %chat, logprobs => $T, top_logprobs => '2' },
      'top_logprobs', 'invalid_type' ],
    [ 'chat max_completion_tokens a string',
      { %chat, max_completion_tokens => '2' }, 'max_completion_tokens',
      'invalid_type' ],
    [ 'chat n over llm_max_n', { %chat, n => 9 }, 'n', 'invalid_value' ],
);

for my $c (@chats) {
    my ($name, $body, $param, $code) = @$c;
    delete $body->{$_} for grep { !defined $body->{$_} } keys %$body;
    LLMTest::is_error($t->post('/v1/chat/completions', $body), 400, $name,
                      type => 'invalid_request_error', param => $param,
                      code => $code);
}

# --- 404 ----------------------------------------------------------------
my $r = $t->post('/v1/completions', { %ok, model => 'nosuch' });
LLMTest::is_error($r, 404, 'unknown model', param => 'model',
                  code => 'model_not_found', message => qr/nosuch/);
LLMTest::is_error($t->post('/v1/chat/completions', { %chat, model => 'x' }),
                  404, 'chat: unknown model', code => 'model_not_found');
LLMTest::is_error($t->get('/v1/models/nosuch'), 404, 'GET /v1/models/nosuch',
                  code => 'model_not_found');
$r = $t->get('/v1/models/stories');
is($r->{status}, 200, 'GET /v1/models/stories');
is($r->{json}{id}, 'stories', 'the model object');
is($r->{json}{object}, 'model', 'object model');
LLMTest::is_error($t->get('/v1/chat/completions'), 405, 'GET on chat',
                  code => 'method_not_allowed');
LLMTest::is_error($t->post('/v1/chat/nosuch', \%chat), 404,
                  'an unknown route', code => 'unknown_url');

# --- 413 ----------------------------------------------------------------
my $big = 'Once upon a time ' x 100;
LLMTest::is_error($t->post('/small/v1/completions', { %ok, prompt => $big }),
                  413, 'over client_max_body_size',
                  type => 'invalid_request_error', code => 'request_too_large');

my $chunked = LLMTest->json->encode({ %ok, prompt => $big });
my $s = $t->raw_request("POST /small/v1/completions HTTP/1.1\r\nHost: x\r\n"
    . "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    . "Connection: close\r\n\r\n"
    . sprintf("%x\r\n%s\r\n0\r\n\r\n", length $chunked, $chunked));
my $raw = do { local $/; <$s> };
my ($head, $body) = split /\r\n\r\n/, $raw // '', 2;
$body =~ s/^[0-9a-f]+\r\n(.*?)\r\n0\r\n\r\n$/$1/s
    if ($head // '') =~ /chunked/i;
my ($status) = ($head // '') =~ m{^HTTP/1\.1 (\d+)};
my ($type) = ($head // '') =~ /^Content-Type: (.*?)\r$/mi;
LLMTest::is_error({ status => $status // 0,
                    headers => { 'content-type' => $type // '' },
                    json => eval { LLMTest->json->decode($body) },
                    content => $body },
                  413, 'a chunked body over client_max_body_size',
                  code => 'request_too_large');

LLMTest::is_error($t->post('/v1/completions',
                           { %ok, prompt => 'a ' x 300_000 }),
                  413, 'a body larger than client_body_buffer_size',
                  code => 'request_too_large');

LLMTest::is_error($t->post('/v1/completions',
                           { %ok, prompt => 'a' x 300_000 }),
                  413, 'a request larger than the engine takes',
                  param => 'prompt', code => 'request_too_large');

# --- 429 and other pages nginx makes ---------------------------------------
is($t->post('/limited/v1/completions', \%ok)->{status}, 200,
   'limit_req: the first request passes');
$r = $t->post('/limited/v1/completions', \%ok);
LLMTest::is_error($r, 429, 'limit_req: the next is a 429',
                  code => 'rate_limit_exceeded');

LLMTest::is_error($t->post('/broken/v1/completions', \%ok), 502,
                  'a page nginx makes in an llm location',
                  type => 'server_error');
$r = $t->get('/plain404');
is($r->{status}, 404, 'elsewhere nginx pages stay as they are');
like($r->{headers}{'content-type'}, qr{^text/html}, 'elsewhere: HTML');

# the service is still fine
is($t->post('/v1/completions', \%ok)->{status}, 200, 'a good request after');

done_testing;
