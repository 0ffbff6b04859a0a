# Request and token limits in Redis (llm_redis, llm_limit_zone,
# llm_limit): directive parsing, the x-ratelimit-* headers, 429 bodies,
# tokens charged with the counts the engine reported, several zones in
# one location, a flushed script, AUTH and SELECT.  A real redis-server,
# a real engine and a real nginx.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;

# --- directives -------------------------------------------------------------

my $redis = 'llm_redis 127.0.0.1:6379;';
my $zone = 'llm_limit_zone name=api key=$http_x_key requests=3r/m;';
my $loc = 'location /v1/ { llm_pass default; llm_limit api; }';

my @good = (
    [ 'a zone of requests per minute', "$redis $zone", $loc ],
    [ 'requests per second, the unit as its own argument, burst',
      "$redis llm_limit_zone name=api key=\$binary_remote_addr"
      . ' requests=10 r/s burst=5;', $loc ],
    [ 'tokens only, fail=closed, size',
      "$redis llm_limit_zone name=api key=\$http_x_key tokens=1000t/m"
      . ' fail=closed size=64k;', $loc ],
    [ 'tokens as "N t/m", requests, fail=open',
      "$redis llm_limit_zone name=api key=\$http_x_key requests=5r/m"
      . ' tokens=100 t/m fail=open;', $loc ],
    [ 'llm_redis with password, db and timeout, unix socket',
      'llm_redis unix:/tmp/redis.sock password=secret db=3 timeout=50ms;'
      . " $zone", $loc ],
    [ 'llm_redis by host name', "llm_redis localhost:6379; $zone", $loc ],
    [ 'no llm_redis: this node counts alone', $zone, $loc ],
    [ 'llm_limit at server level, two zones',
      "$redis $zone llm_limit_zone name=all key=all requests=9r/s;",
      "llm_limit api; llm_limit all; $loc" ],
    [ 'llm_limit before its zone is defined', "$redis", $loc, $zone ],
);

for my $case (@good) {
    my ($name, $http, $server, $after) = @$case;
    my $conf = $t->nginx_conf(http => $http, server => $server);
    # $after goes after the server block that uses it
    $conf =~ s/(\n\}\n)$/\n    $after$1/ if $after;
    my ($rc, $out) = $t->nginx_test($conf);
    is($rc, 0, "accepted: $name") or diag $out;
}

my @bad = (
    [ 'unknown zone in llm_limit', $redis,
      'location /v1/ { llm_pass default; llm_limit nosuch; }', qr/nosuch/ ],
    [ 'zone without a name', "$redis llm_limit_zone key=\$x requests=1r/s;",
      $loc, qr/name=/ ],
    [ 'zone without a key', "$redis llm_limit_zone name=api requests=1r/s;",
      $loc, qr/key=/ ],
    [ 'zone that limits nothing', "$redis llm_limit_zone name=api key=\$x;",
      $loc, qr/limits nothing/ ],
    [ 'requests per hour', "$redis llm_limit_zone name=api key=\$x"
      . ' requests=10r/h;', $loc, qr{requests=10r/h} ],
    [ 'requests zero', "$redis llm_limit_zone name=api key=\$x"
      . ' requests=0r/s;', $loc, qr{requests=0r/s} ],
    [ 'tokens per second', "$redis llm_limit_zone name=api key=\$x"
      . ' tokens=10t/s;', $loc, qr{tokens=10t/s} ],
    [ 'burst without requests', "$redis llm_limit_zone name=api key=\$x"
      . ' tokens=10t/m burst=3;', $loc, qr/burst/ ],
    [ 'bad fail=', "$redis llm_limit_zone name=api key=\$x requests=1r/s"
      . ' fail=maybe;', $loc, qr/fail=maybe/ ],
    [ 'unknown parameter', "$redis llm_limit_zone name=api key=\$x"
      . ' requests=1r/s colour=blue;', $loc, qr/colour=blue/ ],
    [ 'zone defined twice', "$redis $zone $zone", $loc, qr/duplicate/ ],
    [ 'llm_limit twice in a location', "$redis $zone",
      'location /v1/ { llm_pass default; llm_limit api; llm_limit api; }',
      qr/duplicate/ ],
    [ 'llm_redis twice', "$redis $redis $zone", $loc, qr/duplicate/ ],
    [ 'llm_redis bad timeout', "llm_redis 127.0.0.1:6379 timeout=soon;"
      . " $zone", $loc, qr/timeout=soon/ ],
    [ 'llm_redis bad db', "llm_redis 127.0.0.1:6379 db=x; $zone", $loc,
      qr/db=x/ ],
    [ 'llm_redis bad address', "llm_redis 127.0.0.1:99999; $zone", $loc,
      qr/99999/ ],
    [ 'llm_redis in a location', $zone,
      'location /v1/ { llm_pass default; llm_redis 127.0.0.1; }',
      qr/llm_redis/ ],
    [ 'llm_limit_zone in a location', $redis,
      "location /v1/ { llm_pass default; $zone }", qr/llm_limit_zone/ ],
);

for my $case (@bad) {
    my ($name, $http, $server, $re) = @$case;
    my ($rc, $out) = $t->nginx_test($t->nginx_conf(http => $http,
                                                   server => $server));
    isnt($rc, 0, "refused: $name");
    like($out, $re, "the message names the bad value: $name");
}

my ($rc, $out) = $t->nginx_test($t->nginx_conf(
    http => 'llm_redis 127.0.0.1 password=hunter2 colour=blue;' . $zone,
    server => $loc));
unlike($out, qr/hunter2/, 'a refused llm_redis line never shows the password');

# --- a running Redis --------------------------------------------------------

$t->start_redis;
$t->start_engine;
my $rp = $t->redis_port;

$t->start_nginx(
    http => "llm_redis 127.0.0.1:$rp timeout=2s;\n"
        . "llm_limit_zone name=api key=\$http_x_key requests=3r/m;\n"
        . "llm_limit_zone name=tok key=\$http_x_key tokens=1000t/m;\n"
        . "llm_limit_zone name=small key=\$http_x_key tokens=40t/m;\n"
        . "llm_limit_zone name=per key=\$http_x_key requests=5r/m;\n"
        . "llm_limit_zone name=all key=everyone requests=2r/m;\n",
    server => "location /v1/ { llm_pass default; llm_limit api; }\n"
        . "location /tok/v1/ { llm_pass default; llm_limit tok; }\n"
        . "location /small/v1/ { llm_pass default; llm_limit small; }\n"
        . "location /two/v1/ { llm_pass default; llm_limit per;"
        . " llm_limit all; }\n");
ok($t->wait_ready, 'workers attached to the engine');

my %req = (model => 'stories', prompt => 'Once upon a time',
           max_tokens => 24, temperature => 0);

sub post_key {
    my ($path, $key, %extra) = @_;
    return $t->post($path, { %req, %extra },
                    headers => { 'X-Key' => $key });
}

# requests: three a minute, then 429
my @r = map { post_key('/v1/completions', 'alice') } 1 .. 4;
is_deeply([ map { $_->{status} } @r ], [ 200, 200, 200, 429 ],
          'three requests a minute: the fourth is refused');
is_deeply([ map { $_->{headers}{'x-ratelimit-limit-requests'} } @r ],
          [ 3, 3, 3, 3 ], 'x-ratelimit-limit-requests');
is_deeply([ map { $_->{headers}{'x-ratelimit-remaining-requests'} } @r ],
          [ 2, 1, 0, 0 ], 'x-ratelimit-remaining-requests counts down');
is($r[0]{headers}{'x-ratelimit-reset-requests'}, '20s',
   'x-ratelimit-reset-requests: one request back in 20s');
like($_->{headers}{'x-ratelimit-reset-requests'}, qr/^(\d+m)?\d+(\.\d+)?s$/,
     'reset is a duration') for @r[1 .. 3];
ok(!exists $r[0]{headers}{'x-ratelimit-limit-tokens'},
   'no token headers for a zone without a token limit');

my $no = $r[3];
LLMTest::is_error($no, 429, '429', type => 'rate_limit_exceeded',
                  code => 'rate_limit_exceeded',
                  message => qr/requests in zone "api".*try again in \d/);
like($no->{headers}{'retry-after'} // '', qr/^\d+$/, 'Retry-After seconds');
ok($no->{headers}{'retry-after'} >= 1 && $no->{headers}{'retry-after'} <= 20,
   'Retry-After: at most the 20s one request takes to come back');
is(post_key('/v1/completions', 'bob')->{status}, 200,
   'another key has its own budget');

my $h = $t->redis('HGETALL', 'llm:limit:api:alice');
my %h = @{ ref $h ? $h : [] };
ok(defined $h{r} && $h{r} < 1 && defined $h{ts},
   'Redis holds the key\'s bucket') or diag explain $h;
my $ttl = $t->redis('PTTL', 'llm:limit:api:alice');
ok($ttl > 0 && $ttl <= 61000, "the bucket expires once full again ($ttl)");

# no key, no limit; locations without llm_limit are not counted
my $nokey = $t->post('/v1/completions', \%req);
is($nokey->{status}, 200, 'an empty key is not limited');
ok(!exists $nokey->{headers}{'x-ratelimit-limit-requests'},
   'and gets no x-ratelimit headers');
my $st = $t->get('/static');
is($st->{status}, 200, 'a location without llm_limit answers');
ok(!exists $st->{headers}{'x-ratelimit-remaining-requests'},
   'without x-ratelimit headers');

# tokens: the prompt and completion counts the engine reported
my $x = post_key('/tok/v1/completions', 'carol');
is($x->{status}, 200, 'tokens: admitted');
is($x->{headers}{'x-ratelimit-limit-tokens'}, 1000, 'x-ratelimit-limit-tokens');
is($x->{headers}{'x-ratelimit-remaining-tokens'}, 1000,
   'a fresh key has the whole budget');
is($x->{headers}{'x-ratelimit-reset-tokens'}, '0ms', 'and is full');
my $used = $x->{json}{usage}{total_tokens};
is($used, 29, 'the request used 29 tokens');
ok(LLMTest::wait_for(sub {
       ($t->redis('HGET', 'llm:limit:tok:carol', 't') // '') eq 1000 - $used
   }), 'the bucket was charged exactly the reported prompt + completion')
    or diag $t->redis('HGET', 'llm:limit:tok:carol', 't');
$x = post_key('/tok/v1/completions', 'carol');
my $left = $x->{headers}{'x-ratelimit-remaining-tokens'};
ok($left >= 1000 - $used && $left < 1000 - $used + 20,
   "the next response reports the charge ($left left)");
like($x->{headers}{'x-ratelimit-reset-tokens'}, qr/^\d+(\.\d+)?s$/,
     'and when it is full again');

# streamed: the counts of the final usage chunk
my $s = $t->post_stream('/tok/v1/completions',
                        { %req, stream_options => { include_usage =>
                                                    JSON::PP::true } },
                        headers => { 'X-Key' => 'dave' });
is($s->{status}, 200, 'streamed: admitted');
is($s->{headers}{'x-ratelimit-remaining-tokens'}, 1000,
   'streamed responses carry the headers too');
my ($u) = grep { ref $_ && $_->{usage} } @{ $s->{events} };
my $total = $u ? $u->{usage}{prompt_tokens} + $u->{usage}{completion_tokens}
               : 0;
ok($total > 0, "the stream reported its usage ($total)");
ok(LLMTest::wait_for(sub {
       ($t->redis('HGET', 'llm:limit:tok:dave', 't') // '') eq 1000 - $total
   }), 'a stream is charged its prompt + completion when it ends')
    or diag $t->redis('HGET', 'llm:limit:tok:dave', 't');

# a small token budget: admitted while anything is left, then 429
my @small = (post_key('/small/v1/completions', 'erin'));
ok(LLMTest::wait_for(sub {
       ($t->redis('HGET', 'llm:limit:small:erin', 't') // '') eq 11 }),
   '40 tokens a minute: 11 left after 29');
push @small, post_key('/small/v1/completions', 'erin');
ok(LLMTest::wait_for(sub {
       ($t->redis('HGET', 'llm:limit:small:erin', 't') // 0) < 0 }),
   'a request may take the budget below zero');
push @small, post_key('/small/v1/completions', 'erin');
is_deeply([ map { $_->{status} } @small ], [ 200, 200, 429 ],
          'admitted while a token is left, then refused');
LLMTest::is_error($small[2], 429, 'tokens 429', type => 'rate_limit_exceeded',
                  message => qr/tokens in zone "small"/);
is($small[2]{headers}{'x-ratelimit-remaining-tokens'}, 0,
   'no tokens remaining');
ok($small[2]{headers}{'retry-after'} > 1,
   'Retry-After covers the debt (' . $small[2]{headers}{'retry-after'} . 's)');

# two zones: the request passes both or neither
my @two = (post_key('/two/v1/completions', 'frank'),
           post_key('/two/v1/completions', 'grace'),
           post_key('/two/v1/completions', 'heidi'));
is_deeply([ map { $_->{status} } @two ], [ 200, 200, 429 ],
          'a shared zone refuses the third key');
like($two[2]{json}{error}{message}, qr/zone "all"/, 'naming that zone');
is_deeply([ map { $_->{headers}{'x-ratelimit-remaining-requests'} } @two ],
          [ 1, 0, 0 ], 'headers report the tightest zone');
is($t->redis('EXISTS', 'llm:limit:per:heidi'), 0,
   'a refused request takes nothing from the zones that had room');

# a Redis that lost the script: EVAL, then EVALSHA again
is($t->redis('SCRIPT', 'FLUSH'), 'OK', 'SCRIPT FLUSH');
$x = post_key('/v1/completions', 'ivan');
is($x->{status}, 200, 'after SCRIPT FLUSH the request still passes');
is($x->{headers}{'x-ratelimit-remaining-requests'}, 2,
   'counted in Redis');
like($t->error_log, qr/lost script [0-9a-f]{40}/, 'the lost script is logged');

# GET counts too, and gets the headers
my $m = $t->get('/v1/models', headers => { 'X-Key' => 'judy' });
is($m->{status}, 200, 'GET /v1/models');
is($m->{headers}{'x-ratelimit-remaining-requests'}, 2,
   'GET is counted like any request');

is_deeply([ $t->bad_log_lines ], [], 'no errors in the nginx log');

$t->stop_nginx;

# --- AUTH and SELECT -------------------------------------------------------

my $a = LLMTest->new;
$a->start_redis('--requirepass', 'sesame');
$a->start_engine;
my $ap = $a->redis_port;
$a->start_nginx(
    http => "llm_redis 127.0.0.1:$ap password=sesame db=5;\n"
        . "llm_limit_zone name=api key=\$http_x_key requests=2r/m"
        . " fail=closed;\n",
    server => "location /v1/ { llm_pass default; llm_limit api; }\n");
ok($a->wait_ready, 'AUTH: workers attached to the engine');
my @ar = map {
    $a->post('/v1/completions', \%req, headers => { 'X-Key' => 'kim' })
} 1 .. 3;
is_deeply([ map { $_->{status} } @ar ], [ 200, 200, 429 ],
          'AUTH and SELECT: limits work (fail=closed would say 503)');
my $keys = $a->redis({ auth => 'sesame', db => 5 }, 'KEYS', '*');
is_deeply($keys, [ 'llm:limit:api:kim' ], 'the bucket lives in db 5');
is_deeply([ $a->bad_log_lines ], [], 'AUTH: no errors in the nginx log');

done_testing;
