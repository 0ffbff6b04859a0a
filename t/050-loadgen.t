# The load generator (bench/loadgen.c) against a real nginx and engine,
# for a few seconds: every request answered, none failed, the counts add
# up, in each of its modes (JSON bodies, server-sent events, the engine
# through shared memory), and the engine idle afterwards.  It also checks
# that error answers keep their keep-alive connection usable.  No timing
# is asserted: speed belongs to bench/.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $loadgen = "$LLMTest::BUILD/loadgen";
plan skip_all => "$loadgen is not built (make loadgen)" unless -x $loadgen;

# runs loadgen with @args; returns (exit code, {key => value}, output)
sub loadgen {
    my (@args) = @_;
    my $out = `$loadgen @args 2>&1`;
    my $rc = $? >> 8;
    my %kv = $out =~ /^(\w+): (.*)$/mg;
    return ($rc, \%kv, $out);
}

my $t = LLMTest->new;
$t->start_engine;
$t->start_nginx;
ok($t->wait_ready, 'workers attached to the engine');

my $url = $t->url('/v1/completions');
my $sock = $t->socket_path;

# 4 connections, 20 requests of 24 tokens (greedy: never an early stop)
for my $mode (['JSON', ''], ['SSE', '--stream']) {
    my ($name, $flag) = @$mode;
    my ($rc, $r, $out) = loadgen('-c', 4, '-n', 20, '--max-tokens', 24,
                                 $flag, '--markdown', $name, $url);
    is($rc, 0, "$name: exit status 0") or diag $out;
    is($r->{mode}, 'http', "$name: HTTP mode");
    is($r->{errors}, 0, "$name: no errors") or diag $out;
    is($r->{requests}, 20, "$name: 20 requests measured");
    is($r->{requests_completed}, 20, "$name: 20 completed");
    is($r->{connects}, 4, "$name: one keep-alive connection per client");
    is($r->{completion_tokens}, 480, "$name: 480 tokens (from usage)");
    ok($r->{req_per_s} > 0, "$name: a rate");
    ok($r->{latency_ms_p50} > 0 && $r->{latency_ms_p99}
       >= $r->{latency_ms_p50}, "$name: latency percentiles in order");
    if ($flag) {
        ok($r->{itl_samples} > 0, "$name: inter-token gaps measured");
        ok($r->{ttft_ms_p50} <= $r->{latency_ms_p50},
           "$name: the first token comes before the end");
    } else {
        is($r->{itl_samples}, 0, "$name: no inter-token gaps");
    }
    like($out, qr/^\| $name \| 4 \| [\d.]+ \|/m, "$name: a table row");
}

# a range of max_tokens, chat, counting chunks instead of usage
{
    my ($rc, $r, $out) = loadgen('-c', 2, '-n', 10, '--chat', '--stream',
                                 '--no-usage', '--max-tokens', '4..40',
                                 $t->url('/v1/chat/completions'));
    is($rc, 0, 'chat stream: exit status 0') or diag $out;
    is($r->{errors}, 0, 'chat stream: no errors') or diag $out;
    is($r->{requests}, 10, 'chat stream: 10 requests');
    is($r->{max_tokens}, '4..40', 'chat stream: the range');
    ok($r->{completion_tokens} > 0, 'chat stream: chunks counted');
}

# the engine itself, through shared memory
for my $flag ('', '--stream') {
    my $name = $flag ? 'direct stream' : 'direct';
    my ($rc, $r, $out) = loadgen('--direct', $sock, '-c', 4, '-n', 20,
                                 $flag);
    is($rc, 0, "$name: exit status 0") or diag $out;
    is($r->{mode}, 'direct', "$name: direct mode");
    is($r->{errors}, 0, "$name: no errors") or diag $out;
    is($r->{requests}, 20, "$name: 20 requests");
    is($r->{completion_tokens}, 480, "$name: 480 tokens (from DONE)");
    ok($flag ? $r->{itl_samples} > 0 : $r->{itl_samples} == 0,
       "$name: inter-token gaps only when streaming");
}

# a time limit instead of a count, with a warm-up
{
    my ($rc, $r, $out) = loadgen('-c', 2, '-w', '0.5', '-d', 1, $url);
    is($rc, 0, 'duration: exit status 0') or diag $out;
    is($r->{errors}, 0, 'duration: no errors');
    ok($r->{requests} > 0
       && $r->{requests_completed} >= $r->{requests},
       'duration: warm-up requests are not measured');
    is($r->{requests_issued}, $r->{requests_completed},
       'duration: every request issued completed');
}

# everything ended: the engine's counters are back to idle
{
    my $r;
    ok(LLMTest::wait_for(sub {
        (undef, $r) = loadgen('--direct', $sock, '--stats');
        ($r->{stat_running} // -1) == 0
            && ($r->{slots_free} // -1) == ($r->{slots} // -2) }, 5),
       'the engine is idle: nothing running, every slot free');
    is($r->{stat_requests_failed}, 0, 'no request failed in the engine');
    is($r->{stat_cancelled}, 0, 'none was cancelled');
}

is_deeply([ $t->bad_log_lines ], [], 'no errors in the nginx log');

# errors are counted, and an error answer leaves its keep-alive
# connection usable: no timeouts, no connection closed under the client
for my $case (['unknown model', '--model', 'nosuch'],
              ['max_tokens over the cap', '--max-tokens', 100000])
{
    my ($name, @args) = @$case;
    my ($rc, $r, $out) = loadgen('-c', 2, '-n', 6, '--timeout', 5, @args,
                                 $url);
    is($rc, 1, "$name: exit status 1");
    is($r->{errors}, 6, "$name: 6 errors");
    is($r->{errors_status}, 6, "$name: all of them HTTP statuses")
        or diag $out;
    is($r->{connects}, 2, "$name: on the same 2 connections");
}

done_testing;
