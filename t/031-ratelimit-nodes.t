# Two nginx instances (two "nodes", each with its own engine) share one
# Redis and enforce one limit together: requests counted on either node
# count for both, tokens charged on one are missing on the other, and a
# burst of concurrent requests spread over both nodes and their workers
# is admitted exactly as often as the limit allows.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $a = LLMTest->new;
my $b = LLMTest->new;

$a->start_redis;
my $rp = $a->redis_port;

my %conf = (
    http => "llm_redis 127.0.0.1:$rp timeout=2s;\n"
        . "llm_limit_zone name=shared key=\$http_x_key requests=4r/m"
        . " tokens=1000t/m fail=closed;\n"
        . "llm_limit_zone name=burst key=\$http_x_key requests=10r/m"
        . " fail=closed;\n",
    server => "location /v1/ { llm_pass default; llm_limit shared; }\n"
        . "location /b/v1/ { llm_pass default; llm_limit burst; }\n",
);

for my $t ($a, $b) {
    $t->start_engine;
    $t->start_nginx(%conf);
    ok($t->wait_ready, 'node ' . $t->port . ': attached to its engine');
}

my %req = (model => 'stories', prompt => 'Once upon a time',
           max_tokens => 24, temperature => 0);

sub post_on {
    my ($t, $path, $key, %o) = @_;
    return $t->post($path, { %req, %o }, headers => { 'X-Key' => $key });
}

# four requests a minute, alternating nodes
my @r = map { post_on($_, '/v1/completions', 'k1') } ($a, $b, $a, $b, $a, $b);
is_deeply([ map { $_->{status} } @r ], [ 200, 200, 200, 200, 429, 429 ],
          'four a minute over both nodes together, then 429 on both');
is_deeply([ map { $_->{headers}{'x-ratelimit-remaining-requests'} } @r ],
          [ 3, 2, 1, 0, 0, 0 ],
          'each node sees the requests the other counted');

# tokens charged on one node are gone on the other
my $x = post_on($a, '/v1/completions', 'k2');
is($x->{status}, 200, 'node a: admitted');
my $used = $x->{json}{usage}{total_tokens};
ok(LLMTest::wait_for(sub {
       ($a->redis('HGET', 'llm:limit:shared:k2', 't') // '') eq 1000 - $used
   }), "node a charged the $used tokens it served");
my $y = post_on($b, '/v1/completions', 'k2');
my $left = $y->{headers}{'x-ratelimit-remaining-tokens'};
ok($left >= 1000 - $used && $left < 1000 - $used + 20,
   "node b reports them spent ($left left)");

# concurrent: 16 requests at once over both nodes and all their workers
my @pids;
for my $i (1 .. 16) {
    my $t = $i % 2 ? $a : $b;
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        my $z = post_on($t, '/b/v1/completions', 'k3', max_tokens => 4);
        exit($z->{status} == 200 ? 0 : $z->{status} == 429 ? 1 : 2);
    }
    push @pids, $pid;
}
my %seen;
for (@pids) { waitpid($_, 0); $seen{$? >> 8}++ }
is($seen{0} // 0, 10, 'exactly ten of sixteen admitted (10 a minute)');
is($seen{1} // 0, 6, 'the six others refused with 429');
ok(!$seen{2}, 'no other answer');

is_deeply([ $a->bad_log_lines ], [], 'node a: no errors in the nginx log');
is_deeply([ $b->bad_log_lines ], [], 'node b: no errors in the nginx log');

done_testing;
