# The $llm_* variables in an access log, and llm_metrics: Prometheus
# text with requests by model and status, token counters, histograms,
# the engine's slots and counters; the counters are shared by the
# workers and survive a reload.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;
my $log = $t->dir . '/llm.log';
my %conf = (http => <<'HTTP', server => <<"SERVER");
    log_format llm '$llm_request_model|$llm_model|$llm_prompt_tokens|'
                   '$llm_completion_tokens|$llm_cached_tokens|'
                   '$llm_ttft_ms|$llm_finish_reason|$status';
HTTP
    location /v1/ {
        llm_pass default;
        access_log $log llm;
    }
    location = /metrics {
        llm_metrics;
    }
SERVER

$t->start_engine;
$t->start_nginx(%conf);
ok($t->wait_ready, 'workers attached');

my %ok = (model => 'stories', prompt => 'Once upon a time', max_tokens => 24,
          temperature => 0);

# the fields of the log line a request leaves; nginx writes it after
# the response, so it is waited for.  %total sums the usage logged.
my %total;

sub logged {
    my ($request) = @_;
    my $lines = sub { grep { length } split /\n/, LLMTest::slurp($log) };
    my $before = () = $lines->();
    $request->();
    LLMTest::wait_for(sub { () = $lines->(); $lines->() > $before }, 5);
    my @l = $lines->();
    my @f = split /\|/, $l[-1] // '', -1;
    if (($f[7] // '') eq '200') {
        $total{prompt} += $f[2];
        $total{completion} += $f[3];
        $total{cached} += $f[4];
    }
    return \@f;
}

# --- variables ------------------------------------------------------------
my $l = logged(sub { $t->post('/v1/completions', \%ok) });
is_deeply([ @$l[0 .. 3] ], [ 'stories', 'stories', 5, 24 ],
          'models and usage in the log');
ok($l->[4] =~ /^\d+$/ && $l->[4] <= 5, '$llm_cached_tokens');
like($l->[5], qr/^\d+$/, '$llm_ttft_ms is a number of ms');
is($l->[6], 'length', '$llm_finish_reason');
is($l->[7], 200, 'status');

$l = logged(sub {
    $t->post('/v1/completions', { %ok, n => 2, prompt => ['Once', 'Lily'],
                                  max_tokens => 3 }) });
is_deeply([ @$l[2, 3, 6] ], [ 4, 12, 'length,length,length,length' ],
          'n and a prompt list: usage summed, a reason per choice');

my $stop = logged(sub { $t->post('/v1/completions', { %ok, stop => 'girl' }) });
is($stop->[6], 'stop', '$llm_finish_reason stop');

is_deeply(logged(sub {
              $t->post('/v1/completions', { %ok, temperature => 'hot' }) }),
          [ 'stories', ('-') x 6, 400 ],
          'a 400: only $llm_request_model is set');

is_deeply(logged(sub {
              $t->post('/v1/completions', { %ok, model => 'nosuch' }) }),
          [ 'nosuch', ('-') x 6, 404 ], 'an unknown model: not served');

$l = logged(sub {
    $t->post_stream('/v1/chat/completions', {
        model => 'stories', messages => [{ role => 'user', content => 'Hi' }],
        max_tokens => 5, temperature => 0 }) });
is_deeply([ @$l[1, 3, 6, 7] ], [ 'stories', 5, 'length', 200 ],
          'a chat stream is logged with its usage');

# --- metrics --------------------------------------------------------------
sub metrics {
    my $r = $t->get('/metrics');
    my %m;
    for (split /\n/, $r->{content} // '') {
        next if /^#/;
        $m{$1} = $2 if /^(\S+) (\S+)$/;
    }
    return (\%m, $r);
}

my ($m, $r) = metrics();
is($r->{status}, 200, 'GET /metrics');
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
     'Prometheus text format');
my $s = 'engine="default",model="stories"';
is($m->{qq(llm_requests_total{$s,status="200"})}, 4,
   'requests by model and status: 200');
is($m->{qq(llm_requests_total{engine="default",model="",status="400"})}, 1,
   'a 400 counts without a model');
is($m->{qq(llm_requests_total{engine="default",model="",status="404"})}, 1,
   'so does a 404 for an unknown model');
is($m->{"llm_prompt_tokens_total{$s}"}, $total{prompt},
   'prompt tokens, as logged');
is($m->{"llm_completion_tokens_total{$s}"}, $total{completion},
   'completion tokens, as logged');
is($total{completion}, 24 + 12 + $stop->[3] + 5, 'which the requests asked');
is($m->{"llm_cached_tokens_total{$s}"}, $total{cached},
   'cached tokens, as logged');

for my $h (qw(llm_time_to_first_token_seconds llm_request_duration_seconds
              llm_time_per_output_token_seconds)) {
    my @b = map { $m->{$_} }
            sort { ($a =~ /le="([^"]+)"/)[0] eq '+Inf' ? 1
                   : ($b =~ /le="([^"]+)"/)[0] eq '+Inf' ? -1
                   : ($a =~ /le="([^"]+)"/)[0] <=> ($b =~ /le="([^"]+)"/)[0] }
            grep { /^\Q$h\E_bucket\{\Q$s\E,/ } keys %$m;
    ok(@b > 5, "$h: buckets");
    is((grep { $b[$_] < $b[$_ - 1] } 1 .. $#b), 0, "$h: cumulative");
    is($b[-1], $m->{"${h}_count{$s}"}, "$h: +Inf is the count");
    ok($m->{"${h}_sum{$s}"} > 0, "$h: a sum");
}
is($m->{"llm_time_to_first_token_seconds_count{$s}"}, 4,
   'time to first token: one per served request');
is($m->{"llm_time_per_output_token_seconds_count{$s}"}, 7,
   'time per output token: one per choice of 2+ tokens');

is($m->{'llm_engine_up{engine="default"}'}, 1, 'llm_engine_up');
is($m->{'llm_engine_slots{engine="default",state="free"}'}, 64,
   'llm_engine_slots: all free');
is($m->{'llm_queue_depth{engine="default"}'}, 0, 'llm_queue_depth');
is($m->{'llm_engine_requests_total{engine="default"}'}, 7,
   'the engine\'s own counter of requests (one per choice)');
ok(defined $m->{'llm_engine_steps_total{engine="default"}'},
   'the engine\'s steps');
for my $g (qw(llm_engine_prefix_cache_hit_ratio llm_engine_kv_usage_ratio
              llm_engine_cached_tokens_ratio)) {
    my $v = $m->{qq($g\{engine="default"\})};
    ok(defined $v && $v >= 0 && $v <= 1, "$g is a ratio");
}
ok(defined $m->{'llm_engine_kv_blocks{engine="default"}'},
   'the engine\'s KV blocks');

my %types = $r->{content} =~ /^# TYPE (\S+) (\S+)$/mg;
my @families = $r->{content} =~ /^([a-z_]+?)(?:_bucket|_sum|_count)?[{ ]/mg;
my %seen;
my $grouped = 1;
my $prev = '';
for my $f (@families) {
    $f =~ s/_(bucket|sum|count)$// unless $types{$f};
    next if $f eq $prev;
    $grouped = 0 if $seen{$f}++;
    $prev = $f;
}
ok($grouped, 'each family is one group');
is((grep { !$types{$_} } keys %seen), 0, 'every family has a TYPE');

my ($m2) = metrics();
is_deeply($m2->{qq(llm_requests_total{$s,status="200"})},
          $m->{qq(llm_requests_total{$s,status="200"})},
          'another scrape, maybe another worker: the same counters');

is($t->get('/metrics', headers => {})->{status}, 200, 'GET again');
is($t->post('/metrics', '')->{status}, 405, 'POST /metrics is refused');

# --- a reload keeps the counters ------------------------------------------
ok($t->reload_nginx(%conf), 'reloaded');
ok($t->wait_ready, 'the new workers attached');
($m2) = metrics();
is($m2->{qq(llm_requests_total{$s,status="200"})}, 4,
   'requests survive the reload');
is($m2->{"llm_completion_tokens_total{$s}"},
   $m->{"llm_completion_tokens_total{$s}"}, 'tokens survive the reload');
$t->post('/v1/completions', \%ok);
($m2) = metrics();
is($m2->{qq(llm_requests_total{$s,status="200"})}, 5,
   'and go on counting');

is_deeply([ $t->bad_log_lines ], [], 'no errors in the nginx log');

done_testing;
