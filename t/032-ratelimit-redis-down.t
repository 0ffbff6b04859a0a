# Redis down, stopped or refusing us: fail=open zones count on this node
# (logged once per outage, not per request), fail=closed zones answer
# 503, nothing waits longer than the command timeout, a static location
# keeps answering meanwhile, and the shared limit resumes when Redis is
# back.  One worker, so that a stuck worker could not hide behind
# another.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use HTTP::Tiny;
use POSIX qw(:sys_wait_h);
use LLMTest;

my $t = LLMTest->new;
$t->start_redis;
$t->start_engine;
my $rp = $t->redis_port;

$t->start_nginx(
    workers => 1,
    http => "llm_redis 127.0.0.1:$rp timeout=3s;\n"
        . "llm_limit_zone name=open key=\$http_x_key requests=2r/m"
        . " fail=open;\n"
        . "llm_limit_zone name=closed key=\$http_x_key requests=100r/m"
        . " fail=closed;\n",
    server => "location /v1/ { llm_pass default; llm_limit open; }\n"
        . "location /closed/v1/ { llm_pass default; llm_limit closed; }\n"
        . "location = /status { stub_status; }\n");
ok($t->wait_ready, 'attached to the engine');

my %req = (model => 'stories', prompt => 'Once upon a time',
           max_tokens => 4, temperature => 0);

sub post_key {
    my ($path, $key) = @_;
    return $t->post($path, \%req, headers => { 'X-Key' => $key });
}

sub statuses {
    my ($path, $key, $n) = @_;
    return [ map { post_key($path, $key)->{status} } 1 .. $n ];
}

sub outages { scalar(() = $t->error_log =~ /llm redis \S+ is unavailable/g) }
sub recoveries { scalar(() = $t->error_log =~ /llm redis \S+ is back/g) }

# the requests a worker is processing, as stub_status counts them (this
# one included)
sub writing {
    my $s = $t->get('/status')->{content} // '';
    return $s =~ /Writing: (\d+)/ ? $1 : 0;
}

# --- Redis up ------------------------------------------------------------

is_deeply(statuses('/v1/completions', 'a', 3), [ 200, 200, 429 ],
          'Redis up: two a minute');
is($t->redis('EXISTS', 'llm:limit:open:a'), 1, 'counted in Redis');

# --- Redis killed ----------------------------------------------------------

$t->stop_redis;

is_deeply(statuses('/v1/completions', 'b', 3), [ 200, 200, 429 ],
          'Redis gone, fail=open: this node counts, two a minute');
my $no = post_key('/v1/completions', 'b');
is($no->{headers}{'x-ratelimit-remaining-requests'}, 0,
   'the local count gives the headers');
LLMTest::is_error($no, 429, 'local 429', type => 'rate_limit_exceeded');

my $c = post_key('/closed/v1/completions', 'b');
LLMTest::is_error($c, 503, 'Redis gone, fail=closed', type => 'server_error');
is($c->{headers}{'retry-after'}, 1, '503 with Retry-After');
ok(!exists $c->{headers}{'x-ratelimit-remaining-requests'},
   'no counts to report');
is($t->get('/static')->{status}, 200, 'a static location answers');

# reconnects back off and stay quiet
sleep 3;
is_deeply(statuses('/v1/completions', 'c', 2), [ 200, 200 ],
          'still counting locally after reconnect attempts');
is(outages(), 1, 'the outage is logged once, not per request or retry');

# --- Redis back ------------------------------------------------------------

$t->start_redis;
ok(LLMTest::wait_for(sub { recoveries() == 1 }, 10), 'the link comes back')
    or diag $t->error_log;
is_deeply(statuses('/v1/completions', 'b', 3), [ 200, 200, 429 ],
          'the shared limit resumes (Redis forgot key b)');
is($t->redis('EXISTS', 'llm:limit:open:b'), 1, 'counted in Redis again');
is(post_key('/closed/v1/completions', 'b')->{status}, 200,
   'fail=closed admits again');

# --- Redis stopped: accepts connections, answers nothing -------------------

kill 'STOP', $t->redis_pid;

my $pid = fork // die "fork: $!";
if ($pid == 0) {
    my $z = post_key('/closed/v1/completions', 'd');
    exit($z->{status} == 503 ? 0 : 1);
}

ok(LLMTest::wait_for(sub { writing() >= 2 }),
   'a request waits for the stopped Redis');
my $quick = HTTP::Tiny->new(timeout => 2)->get($t->url('/static'));
is($quick->{status}, 200, 'meanwhile a static location answers at once');
is(waitpid($pid, WNOHANG), 0, 'while the limited request is still waiting');
waitpid($pid, 0);
is($? >> 8, 0, 'fail=closed: 503 once the command timed out');

is(post_key('/closed/v1/completions', 'd')->{status}, 503,
   'the next one does not wait for the stopped Redis');
is_deeply(statuses('/v1/completions', 'e', 3), [ 200, 200, 429 ],
          'fail=open counts locally at once');
is($t->get('/static')->{status}, 200, 'static still answers');
is(outages(), 2, 'the second outage is logged once');

kill 'CONT', $t->redis_pid;
ok(LLMTest::wait_for(sub { recoveries() == 2 }, 15),
   'the link comes back when Redis runs again')
    or diag $t->error_log;
is(post_key('/closed/v1/completions', 'f')->{status}, 200,
   'fail=closed admits again');
is($t->redis('EXISTS', 'llm:limit:closed:f'), 1, 'counted in Redis');

# --- the log ---------------------------------------------------------------

my @bad = $t->bad_log_lines;
is(scalar(grep { !/llm redis \S+ is unavailable/ } @bad), 0,
   'no other errors in the nginx log') or diag join "\n", @bad;
unlike($t->error_log, qr/exited on signal|\[alert\]|\[crit\]/,
       'no worker crashed');

# --- a wrong password: as if Redis were down, logged once -----------------

my $w = LLMTest->new;
$w->start_redis('--requirepass', 'sesame');
$w->start_engine;
my $wp = $w->redis_port;
$w->start_nginx(
    workers => 1,
    http => "llm_redis 127.0.0.1:$wp password=wrong;\n"
        . "llm_limit_zone name=open key=\$http_x_key requests=1r/m;\n",
    server => "location /v1/ { llm_pass default; llm_limit open; }\n");
ok($w->wait_ready, 'wrong password: attached to the engine');
my @ws = map {
    $w->post('/v1/completions', \%req, headers => { 'X-Key' => 'g' })->{status}
} 1 .. 2;
is_deeply(\@ws, [ 200, 429 ], 'wrong password: counted on this node');
sleep 1;
my @wl = $w->bad_log_lines;
is(scalar @wl, 1, 'one error line') or diag join "\n", @wl;
like($wl[0] // '', qr/unavailable: .*(WRONGPASS|invalid password)/i,
     'naming the reason Redis gave');

done_testing;
