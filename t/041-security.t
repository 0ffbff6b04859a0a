# Who may touch what, end to end: the engine's socket mode, the shared
# memory that never appears in the file system, model names that look
# like paths, and what the logs keep: no prompt, no generated text, no
# Redis password, at the most verbose levels of both nginx and the
# engine, through a Redis outage and a wrong password.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $secret = 'Sesame-7e1f';
my $prompt = 'Zyxwvut quokka marmalade';

my $t = LLMTest->new;
$t->start_redis('--requirepass', $secret);
$ENV{LLM_REDIS_PASSWORD} = $secret;
$t->start_engine('--log-level', 'debug',
                 '--redis', '127.0.0.1:' . $t->redis_port);
delete $ENV{LLM_REDIS_PASSWORD};
my $rp = $t->redis_port;

$t->start_nginx(
    workers => 1,
    http => "llm_redis 127.0.0.1:$rp password=$secret timeout=1s;\n"
        . "llm_limit_zone name=z key=\$remote_addr requests=100r/m;\n",
    server => "location /v1/ { llm_pass default; llm_limit z; }\n");
ok($t->wait_ready, 'attached to the engine');

# --- the socket and the shared memory -----------------------------------------

my $mode = (stat $t->socket_path)[2] & 07777;
is(sprintf('%04o', $mode), '0660', 'the socket is 0660 by default');

my $epid = $t->{pids}{engine};
my @maps = do { open my $fh, '<', "/proc/$epid/maps" or die $!; <$fh> };
# shared mappings: the fourth letter of the permissions is s
my @shared = grep { (split ' ')[1] =~ /^...s/ } @maps;
ok(@shared > 0, 'the engine maps shared memory');
my @named = grep { !m{ /memfd:} } @shared;
is(scalar @named, 0, 'all of it a memfd, reachable by no name')
    or diag @named;

# --- model names that look like paths -------------------------------------------

for my $name ('/etc/passwd', '../models/stories260K.gguf',
              $LLMTest::MODEL, 'stories/../stories', "stories\0x")
{
    my $r = $t->post('/v1/completions',
                     { model => $name, prompt => 'x', max_tokens => 1 });
    (my $shown = $name) =~ s/\0/\\0/g;
    ok($r->{status} == 404 || $r->{status} == 400,
       "model \"$shown\" is only a name (status $r->{status})");
}

# --- what the logs keep -------------------------------------------------------------

my $r = $t->post('/v1/completions',
                 { model => 'stories', prompt => $prompt, max_tokens => 16,
                   temperature => 0 });
is($r->{status}, 200, 'a completion');
my $text = $r->{json}{choices}[0]{text} // '';
ok(length $text > 8, 'with some text');

$r = $t->post('/v1/chat/completions',
              { model => 'stories', max_tokens => 8, temperature => 0,
                messages => [ { role => 'user', content => $prompt } ] });
is($r->{status}, 200, 'a chat completion');

# an outage and a recovery make both sides log about Redis
$t->stop_redis;
$t->post('/v1/completions', { model => 'stories', prompt => 'x',
                              max_tokens => 1 });
$t->start_redis('--requirepass', $secret);
ok(LLMTest::wait_for(sub { $t->error_log =~ /llm redis \S+ is back/ }, 15),
   'nginx reconnects to Redis') or diag $t->error_log;

# and a wrong password in a second nginx
my $w = LLMTest->new;
$w->start_redis('--requirepass', 'right');
$w->start_engine;
my $wp = $w->redis_port;
$w->start_nginx(
    workers => 1,
    http => "llm_redis 127.0.0.1:$wp password=$secret;\n"
        . "llm_limit_zone name=z key=\$remote_addr requests=100r/m;\n",
    server => "location /v1/ { llm_pass default; llm_limit z; }\n");
ok($w->wait_ready, 'wrong password: attached to the engine');
$w->post('/v1/completions', { model => 'stories', prompt => 'x',
                              max_tokens => 1 });
sleep 1;
like($w->error_log, qr/redis .*unavailable/, 'the refusal is logged');

my %logs = (
    'nginx error log' => $t->error_log . $w->error_log,
    'engine log' => $t->engine_log . $w->engine_log,
    'nginx stderr' => scalar(LLMTest::slurp($t->dir . '/nginx.out')) // '',
);
for my $what (sort keys %logs) {
    unlike($logs{$what}, qr/\Q$secret\E/, "$what: no Redis password");
    unlike($logs{$what}, qr/quokka/, "$what: no prompt");
    unlike($logs{$what}, qr/\Q$text\E/, "$what: no generated text");
}
like($t->engine_log, qr/debug/, 'the engine did log at debug level');

done_testing;
