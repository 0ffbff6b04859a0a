# Server-sent events: framing, the same text as the reference, [DONE],
# and a client that goes away mid-stream (the engine stops generating).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $ref = ', there was a little girl named Lily. She loved to play outside'
        . ' in the p';

my $t = LLMTest->new;
$t->start_engine;
$t->start_nginx(server => "location /v1/ { llm_pass default;"
                          . " llm_max_tokens 400; }");
ok($t->wait_ready, 'workers attached');

my $r = $t->post_stream('/v1/completions', {
    model => 'stories', prompt => 'Once upon a time', max_tokens => 24,
    temperature => 0 });
is($r->{status}, 200, 'stream: 200');
like($r->{headers}{'content-type'}, qr{^text/event-stream},
     'content type text/event-stream');
ok(!defined $r->{headers}{'content-length'}, 'no content-length');

my @ev = @{ $r->{events} };
is($ev[-1], '[DONE]', 'the stream ends with data: [DONE]');
like($r->{content}, qr/\n\n\z/, 'every event ends with a blank line');
my @data = grep { ref } @ev;
ok(@data >= 2, 'several chunks (' . scalar(@data) . ')');
my $text = join '', map { $_->{choices}[0]{text} // '' } @data;
is($text, $ref, 'streamed text equals the reference');
is((grep { ($_->{object} // '') ne 'text_completion' } @data), 0,
   'every chunk is a text_completion');
my %ids = map { ($_->{id} // '') => 1 } @data;
is(scalar(keys %ids), 1, 'one id for the whole stream');
is($data[-1]{choices}[0]{finish_reason}, 'length',
   'the last chunk carries finish_reason');
is((grep { defined $_->{choices}[0]{finish_reason} } @data[0 .. $#data - 1]),
   0, 'earlier chunks have finish_reason null');

# a client that disconnects mid-stream: the engine is slowed down so the
# generation of 400 tokens takes seconds; the client reads one chunk and
# closes; the engine must log the cancellation well before the end.
my $slow = LLMTest->new;
$slow->start_engine('--debug-step-delay', 20);
$slow->start_nginx(server => "location /v1/ { llm_pass default;"
                             . " llm_max_tokens 400; }");
ok($slow->wait_ready, 'slow engine attached');

my $body = '{"model":"stories","prompt":"Once upon a time",'
         . '"max_tokens":400,"temperature":0,"stream":true}';
my $s = $slow->raw_request("POST /v1/completions HTTP/1.1\r\n"
    . "Host: x\r\nContent-Type: application/json\r\n"
    . "Content-Length: " . length($body) . "\r\n\r\n$body");
my $got = '';
while ($got !~ /data: \{/) {
    my $n = sysread($s, my $buf, 4096);
    last unless $n;
    $got .= $buf;
}
like($got, qr/data: \{/, 'first chunk arrived');
close $s;

ok(LLMTest::wait_for(sub { $slow->engine_log =~ /cancelled by its worker/ },
                     5), 'the engine cancelled the sequence');
my ($n) = $slow->engine_log =~ /after (\d+) of 400 tokens/;
ok(defined $n && $n < 400, 'it stopped early (' . ($n // '?') . ' tokens)');

# the slot is reusable: a normal request still works
$r = $slow->post('/v1/completions', {
    model => 'stories', prompt => 'Once upon a time', max_tokens => 24,
    temperature => 0 });
is($r->{json}{choices}[0]{text}, $ref, 'service continues after the abort');

is_deeply([ $t->bad_log_lines ], [], 'no errors in the nginx log');

done_testing;
