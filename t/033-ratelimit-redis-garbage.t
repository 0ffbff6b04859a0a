# Redis answering garbage: a fake server that speaks RESP well enough for
# the handshake (PING, SCRIPT LOAD names the script's real SHA1), then
# answers the limit script with something wrong: not RESP at all, an
# error, the wrong type, the wrong shape, absurd numbers, a bulk string
# that never ends, nesting deeper than any reply, a closed connection.
# No worker crashes or blocks, fail=closed zones answer 503, fail=open
# zones count on this node, and nothing the server said reaches a client.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(sha1_hex);
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time);
use LLMTest;

# --- the fake Redis ---------------------------------------------------------

# one RESP command (an array of bulk strings) off the front of $$buf;
# returns the words, or undef while it is incomplete
sub take_command {
    my ($buf) = @_;
    return undef unless $$buf =~ /\A\*(\d+)\r\n/;
    my ($n, $pos) = ($1, length $&);
    my @words;
    for (1 .. $n) {
        my $rest = substr($$buf, $pos);
        return undef unless $rest =~ /\A\$(\d+)\r\n/;
        my ($len, $hdr) = ($1, length $&);
        return undef if length($rest) < $hdr + $len + 2;
        push @words, substr($rest, $hdr, $len);
        $pos += $hdr + $len + 2;
    }
    substr($$buf, 0, $pos) = '';
    return \@words;
}

my $deep = ('*1' . "\r\n") x 5000 . ":1\r\n";

# what the limit script gets back, by mode; undef: close the connection
my %answer = (
    'not RESP'       => "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    'an error'       => "-ERR <script>alert(1)</script> went wrong\r\n",
    'an integer'     => ":1\r\n",
    'a short array'  => "*1\r\n:1\r\n",
    'strings inside' => "*6\r\n" . ("\$1\r\n1\r\n" x 6),
    'a nil inside'   => "*6\r\n:1\r\n:0\r\n\$-1\r\n:1\r\n:1\r\n:1\r\n",
    'endless bulk'   => "\$2147483647\r\nabc",
    'deep nesting'   => $deep,
    'NUL bytes'      => "+\0\0\0\r\n",
    'closed'         => undef,
);

# the right shape with absurd numbers: admitted, and the headers stay
# within what the zone could say
my $absurd = "*6\r\n:1\r\n:-5\r\n:9223372036854775807\r\n"
    . ":9223372036854775807\r\n:-9223372036854775808\r\n:-42\r\n";

# forks a server on a free port answering $mode, writing the name of
# each command it gets to $log; returns (pid, port)
sub fake_redis {
    my ($mode, $log, $answer) = @_;
    my $l = IO::Socket::INET->new(Listen => 16, LocalAddr => '127.0.0.1',
                                  LocalPort => 0, Proto => 'tcp',
                                  ReuseAddr => 1)
        or die "listen: $!";
    my $port = $l->sockport;
    my $pid = fork // die "fork: $!";
    if ($pid) {
        close $l;
        return ($pid, $port);
    }

    my $sel = IO::Select->new($l);
    my %buf;
    my $stop = time + 120;

    while (time < $stop) {
        for my $s ($sel->can_read(0.5)) {
            if ($s == $l) {
                my $c = $l->accept or next;
                $sel->add($c);
                $buf{$c} = '';
                next;
            }
            my $n = sysread($s, my $in, 65536);
            if (!$n) {
                $sel->remove($s);
                close $s;
                next;
            }
            $buf{$s} .= $in;
            while (my $w = take_command(\$buf{$s})) {
                my $cmd = uc $w->[0];
                if (open my $fh, '>>', $log) {
                    print $fh "$cmd\n";
                    close $fh;
                }
                my $out;
                if ($cmd eq 'PING') {
                    $out = "+PONG\r\n";
                } elsif ($cmd eq 'SCRIPT' && uc($w->[1] // '') eq 'LOAD') {
                    $out = "\$40\r\n" . sha1_hex($w->[2] // '') . "\r\n";
                } elsif ($cmd eq 'AUTH' || $cmd eq 'SELECT') {
                    $out = "+OK\r\n";
                } else {
                    $out = $answer;
                }
                if (!defined $out) {
                    $sel->remove($s);
                    close $s;
                    last;
                }
                syswrite($s, $out);
            }
        }
    }
    exit 0;
}

# --- each mode against a fresh nginx ------------------------------------------

my %req = (model => 'stories', prompt => 'Once upon a time',
           max_tokens => 2, temperature => 0);

for my $mode (sort keys %answer) {
    my $t = LLMTest->new;
    my $flog = $t->dir . '/fake-redis.log';
    my ($fpid, $fport) = fake_redis($mode, $flog, $answer{$mode});

    $t->start_engine;
    $t->start_nginx(
        workers => 1,
        http => "llm_redis 127.0.0.1:$fport timeout=1s;\n"
            . "llm_limit_zone name=open key=\$http_x_key requests=2r/m;\n"
            . "llm_limit_zone name=closed key=\$http_x_key"
            . " requests=100r/m fail=closed;\n",
        server => "location /v1/ { llm_pass default; llm_limit open; }\n"
            . "location /closed/v1/ { llm_pass default;"
            . " llm_limit closed; }\n");
    ok($t->wait_ready, "$mode: attached to the engine");

    my $t0 = time;
    my $c = $t->post('/closed/v1/completions', \%req,
                     headers => { 'X-Key' => 'k' });
    my $took = time - $t0;
    note sprintf "%s: %.3f s", $mode, $took;
    LLMTest::is_error($c, 503, "$mode: fail=closed refuses",
                      type => 'server_error');
    cmp_ok($took, '<', 4, "$mode: within the command timeout");
    unlike($c->{content} // '', qr/alert|HTTP\/1\.1|went wrong/,
           "$mode: nothing Redis said reaches the client");

    # fail=open: counted on this node, two a minute
    my @st = map {
        $t->post('/v1/completions', \%req,
                 headers => { 'X-Key' => 'o' })->{status}
    } 1 .. 3;
    is_deeply(\@st, [ 200, 200, 429 ], "$mode: fail=open counts locally");

    is($t->get('/static')->{status}, 200, "$mode: a static location answers");
    like(LLMTest::slurp($flog), qr/^SCRIPT\n(.*\n)*EVALSHA$/m,
         "$mode: the script was loaded and run against the fake");

    my $log = $t->error_log;
    unlike($log, qr/exited on signal|\[alert\]|\[crit\]|\[emerg\]/,
           "$mode: no worker crashed") or diag $log;
    my $said = () = $log =~ /llm limit script|llm redis \S+ is unavailable/g;
    is($said, 1, "$mode: four bad answers, logged once") or diag $log;

    $t->stop_nginx;
    kill 'KILL', $fpid;
    waitpid($fpid, 0);
}

# --- absurd numbers in the right shape --------------------------------------

# "1h2m3.5s" or "250ms" in milliseconds
sub duration_ms {
    my ($d) = @_;
    my $ms = 0;
    $ms += $1 * 3600e3 if $d =~ /(\d+)h/;
    $ms += $1 * 60e3 if $d =~ /(\d+)m(?!s)/;
    $ms += $1 * 1e3 if $d =~ /([\d.]+)s/ && $d !~ /ms$/;
    $ms += $1 if $d =~ /(\d+)ms$/;
    return $ms;
}

{
    my $t = LLMTest->new;
    my ($fpid, $fport) = fake_redis('absurd', $t->dir . '/fake.log', $absurd);
    $t->start_engine;
    $t->start_nginx(
        workers => 1,
        http => "llm_redis 127.0.0.1:$fport timeout=1s;\n"
            . "llm_limit_zone name=z key=\$http_x_key requests=5r/m"
            . " tokens=1000t/m;\n",
        server => "location /v1/ { llm_pass default; llm_limit z; }\n");
    ok($t->wait_ready, 'absurd numbers: attached to the engine');

    my $r = $t->post('/v1/completions', \%req, headers => { 'X-Key' => 'a' });
    is($r->{status}, 200, 'absurd numbers: Redis admitted the request');
    my $h = $r->{headers};
    note join ', ', map { "$_: $h->{$_}" } sort grep { /^x-ratelimit/ } keys %$h;
    for my $kind ('requests', 'tokens') {
        my $limit = $h->{"x-ratelimit-limit-$kind"};
        my $left = $h->{"x-ratelimit-remaining-$kind"};
        like($left // '', qr/^\d+$/, "absurd numbers: remaining $kind a count");
        cmp_ok($left // -1, '<=', $limit // 0,
               "absurd numbers: remaining $kind within the limit");
        like($h->{"x-ratelimit-reset-$kind"} // '',
             qr/^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)?$/,
             "absurd numbers: reset $kind a duration");
        cmp_ok(duration_ms($h->{"x-ratelimit-reset-$kind"}), '<=', 86400e3,
               "absurd numbers: reset $kind within a day");
    }
    unlike($t->error_log, qr/exited on signal|\[alert\]/,
           'absurd numbers: no worker crashed');
    $t->stop_nginx;
    kill 'KILL', $fpid;
    waitpid($fpid, 0);
}

done_testing;
