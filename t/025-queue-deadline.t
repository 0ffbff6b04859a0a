# Waiting for a slot and the generation deadline, on an engine with one
# slot that sleeps after every step: a request that finds no free slot
# waits for one (llm_queue_timeout) and is served when it frees, n > 1
# takes its slots one after another, a wait that runs out is a 503
# (queue_timeout), llm_queue_timeout 0 refuses at once, a client that
# leaves while waiting leaves the queue, and llm_timeout ends a
# generation with a 504, as JSON or as the stream's last event.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $ref = ', there was a little girl named Lily. She loved to play outside'
        . ' in the p';

my $t = LLMTest->new;
$t->start_engine('--slots', 1, '--debug-step-delay', 10);
$t->start_nginx(server => <<'CONF');
        location /v1/ {
            llm_pass default;
            llm_max_tokens 400;
            llm_queue_timeout 20s;
        }
        location /short/v1/ {
            llm_pass default;
            llm_queue_timeout 200ms;
        }
        location /nowait/v1/ {
            llm_pass default;
            llm_queue_timeout 0;
        }
        location /deadline/v1/ {
            llm_pass default;
            llm_max_tokens 400;
            llm_timeout 1s;
        }
        location = /metrics {
            llm_metrics;
        }
CONF
ok($t->wait_ready, 'workers attached');

my %ref = (model => 'stories', prompt => 'Once upon a time', max_tokens => 24,
           temperature => 0);

# a streaming request that holds the only slot: returns once it streams
sub hold {
    my ($tokens, $path) = @_;
    my $body = LLMTest->json->encode({ %ref, max_tokens => $tokens,
                                       stream => JSON::PP::true });
    my $s = $t->raw_request("POST " . ($path // '/v1/completions')
        . " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        . "Content-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body");
    my $got = '';
    while ($got !~ /data: \{/) {
        sysread($s, my $buf, 4096) or last;
        $got .= $buf;
    }
    return ($s, $got);
}

sub rest {
    my ($s, $got) = @_;
    local $/;
    my $more = <$s>;
    return $got . ($more // '');
}

sub gauge {
    my ($name) = @_;
    my ($v) = $t->get('/metrics')->{content}
              =~ /^\Q$name\E\{engine="default"\} (\d+)$/m;
    return $v // -1;
}

# --- waiting for the slot --------------------------------------------------
my ($s, $got) = hold(150);
like($got, qr/data: \{/, 'a stream holds the only slot');

my $pid = fork // die;
if ($pid == 0) {
    my $r = $t->post('/v1/completions', \%ref);
    exit((($r->{json}{choices}[0]{text} // '') eq $ref) ? 0 : 1);
}

ok(LLMTest::wait_for(sub { gauge('llm_queue_waiting') == 1 }, 10),
   'the second request waits for a slot (llm_queue_waiting 1)');
is(gauge('llm_queue_depth'), 1, 'llm_queue_depth counts it');

my $all = rest($s, $got);
like($all, qr/data: \[DONE\]\n\n\r\n0\r\n\r\n\z/,
     'the first request ends normally');
waitpid($pid, 0);
is($?, 0, 'the waiting request got the slot and the reference text');
is(gauge('llm_queue_waiting'), 0, 'nothing waits any more');

# --- n > 1 on one slot: the choices take turns -----------------------------
my $r = $t->post('/v1/completions', { %ref, n => 3, temperature => 1,
                                      seed => 4, max_tokens => 8 });
is($r->{status}, 200, 'n 3 with one slot');
is(scalar @{ $r->{json}{choices} // [] }, 3, 'three choices');
is($r->{json}{choices}[2]{text},
   $t->post('/v1/completions', { %ref, temperature => 1, seed => 6,
                                 max_tokens => 8 })->{json}{choices}[0]{text},
   'the third is seed + 2');

$r = $t->post_stream('/v1/chat/completions', {
    model => 'stories', messages => [{ role => 'user', content => 'Hi' }],
    max_tokens => 4, n => 2, temperature => 0 });
is((grep { ref && $_->{choices}[0] && $_->{choices}[0]{finish_reason} }
        @{ $r->{events} }), 2, 'a stream of n 2 on one slot ends both');

# --- the wait runs out -------------------------------------------------------
($s, $got) = hold(400);

$r = $t->post('/short/v1/completions', \%ref);
LLMTest::is_error($r, 503, 'no slot within llm_queue_timeout',
                  type => 'server_error', code => 'queue_timeout');
ok(defined $r->{headers}{'retry-after'}, 'queue timeout: Retry-After');
is($r->{headers}{'x-llm-model'}, 'stories', 'queue timeout: X-LLM-Model');

LLMTest::is_error($t->post('/nowait/v1/completions', \%ref), 503,
                  'llm_queue_timeout 0 refuses at once',
                  code => 'engine_overloaded');

# a client that leaves while it waits
my $body = LLMTest->json->encode(\%ref);
my $w = $t->raw_request("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
    . "Content-Type: application/json\r\nContent-Length: " . length($body)
    . "\r\n\r\n$body");
ok(LLMTest::wait_for(sub { gauge('llm_queue_waiting') == 1 }, 10),
   'a third request waits');
close $w;
ok(LLMTest::wait_for(sub { gauge('llm_queue_waiting') == 0 }, 10),
   'it leaves the queue when its client goes');

# the holder goes too: its slot is cancelled, then free for the next one
close $s;
$r = $t->post('/v1/completions', \%ref);
is($r->{json}{choices}[0]{text}, $ref, 'the freed slot serves again');

is_deeply([ $t->bad_log_lines ], [], 'no errors in the nginx log so far');

# --- the deadline ------------------------------------------------------------
$r = $t->post('/deadline/v1/completions', { %ref, max_tokens => 400 });
LLMTest::is_error($r, 504, 'llm_timeout passed', type => 'server_error',
                  code => 'timeout');

$r = $t->post_stream('/deadline/v1/completions',
                     { %ref, max_tokens => 400 });
is($r->{status}, 200, 'a stream past its deadline started as 200');
my @ev = @{ $r->{events} };
my $last = $ev[-1];
is(ref $last && ref $last->{error} && $last->{error}{code}, 'timeout',
   'its last event is the timeout error');
ok(!grep({ !ref } @ev), 'no [DONE] after the error');
ok((grep { ref && $_->{choices} } @ev) >= 1, 'tokens came before it');

$r = $t->post_stream('/deadline/v1/completions', { %ref, max_tokens => 2 });
is($r->{events}[-1], '[DONE]', 'a request within the deadline is served');

is_deeply([ grep { !/passed its deadline/ } $t->bad_log_lines ], [],
          'only the deadlines are logged as errors');

done_testing;
