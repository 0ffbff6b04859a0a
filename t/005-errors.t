# Bad requests, unknown routes and methods, and the engine being down:
# every error is an OpenAI error object with the right status, and the
# module reattaches by itself when the engine comes (back) up.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $ref = ', there was a little girl named Lily. She loved to play outside'
        . ' in the p';

my $t = LLMTest->new;

sub is_error {
    my ($r, $status, $name, %want) = @_;
    is($r->{status}, $status, "$name: status $status");
    my $e = ref $r->{json} eq 'HASH' ? $r->{json}{error} : undef;
    ok(ref $e eq 'HASH' && defined $e->{message} && length $e->{message}
       && defined $e->{type} && exists $e->{param} && exists $e->{code},
       "$name: an OpenAI error object") or diag $r->{content};
    for my $k (sort keys %want) {
        is($e->{$k}, $want{$k}, "$name: $k");
    }
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         "$name: JSON content type");
}

# --- the engine is not running yet -------------------------------------
$t->start_nginx(server => "location /v1/ { llm_pass default;"
                          . " llm_max_tokens 64; }");

my $r = $t->post('/v1/completions', { model => 'stories',
                                      prompt => 'Once', max_tokens => 4 });
is_error($r, 503, 'engine down', type => 'server_error');
ok(defined $r->{headers}{'retry-after'}, 'engine down: Retry-After');
is_error($t->get('/v1/models'), 503, 'models with engine down');
is($t->get('/static')->{status}, 200, 'a static location still answers');

# --- it comes up: no reload needed --------------------------------------
$t->start_engine;
ok($t->wait_ready, 'workers attached once the engine came up');

my %ok = (model => 'stories', prompt => 'Once upon a time',
          max_tokens => 24, temperature => 0);
$r = $t->post('/v1/completions', \%ok);
is($r->{json}{choices}[0]{text}, $ref, 'serving after attaching');

# --- bad requests -------------------------------------------------------
my @cases = (
    [ 'not JSON', '{"model": "stories", "prompt": ', 400, undef ],
    [ 'JSON array', '[1, 2, 3]', 400, undef ],
    [ 'JSON string', '"prompt"', 400, undef ],
    [ 'empty body', '', 400, undef ],
    [ 'duplicate keys', '{"model":"stories","model":"x","prompt":"a"}',
      400, undef ],
    [ 'missing prompt', { model => 'stories' }, 400, 'prompt' ],
    [ 'prompt is a number', { model => 'stories', prompt => 5 }, 400,
      'prompt' ],
    [ 'missing model', { prompt => 'x' }, 400, 'model' ],
    [ 'model is a number', { model => 1, prompt => 'x' }, 400, 'model' ],
    [ 'max_tokens a string', { %ok, max_tokens => '5' }, 400, 'max_tokens' ],
    [ 'max_tokens zero', { %ok, max_tokens => 0 }, 400, 'max_tokens' ],
    [ 'max_tokens negative', { %ok, max_tokens => -3 }, 400, 'max_tokens' ],
    [ 'max_tokens fractional', { %ok, max_tokens => 2.5 }, 400,
      'max_tokens' ],
    [ 'max_tokens over llm_max_tokens', { %ok, max_tokens => 65 }, 400,
      'max_tokens' ],
    [ 'temperature a string', { %ok, temperature => 'hot' }, 400,
      'temperature' ],
    [ 'temperature above 2', { %ok, temperature => 2.5 }, 400,
      'temperature' ],
    [ 'temperature negative', { %ok, temperature => -1 }, 400,
      'temperature' ],
    [ 'top_p zero', { %ok, top_p => 0 }, 400, 'top_p' ],
    [ 'top_p above 1', { %ok, top_p => 1.5 }, 400, 'top_p' ],
    [ 'seed fractional', { %ok, seed => 1.5 }, 400, 'seed' ],
    [ 'stream a string', { %ok, stream => 'yes' }, 400, 'stream' ],
);

for my $c (@cases) {
    my ($name, $body, $status, $param) = @$c;
    $r = $t->post('/v1/completions', $body);
    is_error($r, $status, $name, type => 'invalid_request_error',
             defined $param ? (param => $param) : ());
}

$r = $t->post('/v1/completions', { %ok, model => 'nosuch' });
is_error($r, 404, 'unknown model', param => 'model',
         code => 'model_not_found');

# an error message that quotes the request stays valid JSON
$r = $t->post('/v1/completions', { %ok, model => "<b>\"x\\\n\x{1}" });
is_error($r, 404, 'hostile model name', param => 'model');

is_error($t->get('/v1/completions'), 405, 'GET on completions');
is_error($t->post('/v1/models', {}), 405, 'POST on models');
is_error($t->post('/v1/nosuch', \%ok), 404, 'unknown route');

$r = $t->post('/v1/completions', \%ok);
is($r->{json}{choices}[0]{text}, $ref, 'a valid request after all that');

# --- the engine dies and comes back -------------------------------------
$t->stop_engine('KILL');
ok(LLMTest::wait_for(sub {
    $t->post('/v1/completions', \%ok)->{status} == 503 }, 5),
   'engine killed: 503');
$r = $t->post('/v1/completions', \%ok);
is_error($r, 503, 'engine gone');
ok(defined $r->{headers}{'retry-after'}, 'engine gone: Retry-After');

$t->start_engine;
ok($t->wait_ready, 'reattached to the restarted engine without a reload');
$r = $t->post('/v1/completions', \%ok);
is($r->{json}{choices}[0]{text}, $ref, 'serving again');

done_testing;
