# Faults, each end to end with a real nginx and a real engine: the engine
# killed mid-stream, an nginx worker killed mid-stream, a reload while
# streaming, the engine stalled past llm_timeout, and a client that stops
# reading.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Select;
use Test::More;
use Time::HiRes qw(sleep);
use LLMTest;

my $ref = ', there was a little girl named Lily. She loved to play outside'
        . ' in the p';

my %greedy = (model => 'stories', prompt => 'Once upon a time',
              max_tokens => 24, temperature => 0);

# starts a streaming request over HTTP/1.0 (no chunked framing); returns
# the socket
sub open_stream {
    my ($t, $max_tokens) = @_;
    my $body = '{"model":"stories","prompt":"Once upon a time",'
             . qq("max_tokens":$max_tokens,"temperature":0,"stream":true});
    return $t->raw_request("POST /v1/completions HTTP/1.0\r\n"
        . "Host: x\r\nContent-Type: application/json\r\n"
        . "Content-Length: " . length($body) . "\r\n\r\n$body");
}

# reads from a socket until $re matches or $secs pass; returns the text
sub read_until {
    my ($s, $re, $secs) = @_;
    my $got = '';
    my $sel = IO::Select->new($s);
    my $deadline = time + $secs;
    while ($got !~ $re && time < $deadline) {
        next unless $sel->can_read(0.2);
        my $n = sysread($s, my $buf, 65536);
        last unless $n;
        $got .= $buf;
    }
    return $got;
}

sub stream_text {
    my ($raw) = @_;
    my ($body) = $raw =~ /\r\n\r\n(.*)\z/s;
    my @ev = LLMTest::parse_sse($body // '');
    return join '', map { ref $_ && $_->{choices}
                          ? $_->{choices}[0]{text} // '' : '' } @ev;
}

# --- the engine killed mid-stream ----------------------------------------

{
    my $t = LLMTest->new;
    $t->start_engine('--debug-step-delay', 20);
    $t->start_nginx(server => 'location /v1/ { llm_pass default;'
                              . ' llm_max_tokens 400; }');
    ok($t->wait_ready, 'attached');

    my @s = map { open_stream($t, 400) } 1 .. 3;
    for my $s (@s) {
        like(read_until($s, qr/data: \{/, 5), qr/data: \{/,
             'a stream is running');
    }

    $t->stop_engine('KILL');

    for my $s (@s) {
        my $rest = read_until($s, qr/"error"/, 3);
        like($rest, qr/data: \{"error":\{/,
             'the open stream ends with an error event');
        close $s;
    }

    my $r = $t->post('/v1/completions', \%greedy);
    is($r->{status}, 503, 'new requests get 503');
    ok(defined $r->{headers}{'retry-after'}, 'with Retry-After');

    $t->start_engine;
    ok($t->wait_ready, 'the restarted engine is attached without a reload');
    $r = $t->post('/v1/completions', \%greedy);
    is($r->{json}{choices}[0]{text}, $ref, 'and serves');
}

# --- an nginx worker killed mid-stream ----------------------------------

{
    my $t = LLMTest->new;
    $t->start_engine('--debug-step-delay', 20);
    $t->start_nginx(workers => 1,
                    server => 'location /v1/ { llm_pass default;'
                              . ' llm_max_tokens 400; }');
    ok($t->wait_ready, 'attached');

    my @s = map { open_stream($t, 400) } 1 .. 2;
    like(read_until($_, qr/data: \{/, 5), qr/data: \{/, 'streaming')
        for @s;

    my @workers = grep {
        my $ppid = `ps -o ppid= -p $_`;
        $ppid =~ /\b$t->{pids}{nginx}\b/;
    } map { (split ' ')[0] } grep { /nginx: worker process/ }
        `ps -eo pid,args`;
    is(scalar @workers, 1, 'one worker');
    kill 'KILL', $workers[0];

    ok(LLMTest::wait_for(sub {
        $t->engine_log =~ /detached, 2 slots reclaimed/ }, 5),
       'the engine reclaimed both slots of the dead worker')
        or diag $t->engine_log;
    close $_ for @s;

    ok($t->wait_ready, 'the new worker attaches');
    my $r = $t->post('/v1/completions', \%greedy);
    is($r->{json}{choices}[0]{text}, $ref, 'and serves');
}

# --- a reload while streaming -------------------------------------------

{
    my $t = LLMTest->new;
    $t->start_engine('--debug-step-delay', 5);
    $t->start_nginx(server => 'location /v1/ { llm_pass default;'
                              . ' llm_max_tokens 400; }');
    ok($t->wait_ready, 'attached');

    my $s = open_stream($t, 120);
    like(read_until($s, qr/data: \{/, 5), qr/data: \{/, 'streaming');

    kill 'HUP', $t->{pids}{nginx};

    my $all = read_until($s, qr/data: \[DONE\]/, 20);
    like($all, qr/data: \[DONE\]/, 'the open stream finishes after a reload');
    unlike($all, qr/"error"/, 'without an error');

    ok($t->wait_ready, 'new workers attach');
    my $r = $t->post('/v1/completions', \%greedy);
    is($r->{json}{choices}[0]{text}, $ref, 'and serve');
    is_deeply([ $t->bad_log_lines ], [], 'no errors in the nginx log');
}

# --- the engine stalled past llm_timeout ---------------------------------

{
    my $t = LLMTest->new;
    $t->start_engine;
    $t->start_nginx(server => 'location /v1/ { llm_pass default;'
                              . ' llm_timeout 1s; }');
    ok($t->wait_ready, 'attached');

    kill 'STOP', $t->engine_pid;
    my $r = $t->post('/v1/completions', \%greedy);
    is($r->{status}, 504, 'a stalled engine: 504');
    ok(ref $r->{json} eq 'HASH' && $r->{json}{error}{message},
       'with an error object');
    kill 'CONT', $t->engine_pid;

    ok(LLMTest::wait_for(sub {
        my $x = $t->post('/v1/completions', \%greedy);
        ($x->{json}{choices}[0]{text} // '') eq $ref }, 5),
       'the engine resumes and serves again');
}

# --- a client that stops reading ----------------------------------------

{
    my $t = LLMTest->new;
    $t->start_engine;
    $t->start_nginx(server => 'location /v1/ { llm_pass default;'
                              . ' llm_max_tokens 2000; }');
    ok($t->wait_ready, 'attached');

    # a long stream whose reader stalls with tiny socket buffers
    my $s = open_stream($t, 1900);
    setsockopt($s, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 2048);
    sleep 1;

    my $ok = 0;
    for (1 .. 5) {
        my $r = $t->post('/v1/completions', \%greedy);
        $ok++ if ($r->{json}{choices}[0]{text} // '') eq $ref;
    }
    is($ok, 5, 'other requests are served while one reader stalls');

    my $all = read_until($s, qr/data: \[DONE\]/, 30);
    like($all, qr/data: \[DONE\]/, 'the stalled stream completes once read');
    my $full = $t->post('/v1/completions', { %greedy, max_tokens => 1900 });
    is(stream_text($all), $full->{json}{choices}[0]{text},
       'with every token, in order');
    is_deeply([ $t->bad_log_lines ], [], 'no errors in the nginx log');
}

done_testing;
