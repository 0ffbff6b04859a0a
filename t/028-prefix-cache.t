# The prefix cache over HTTP: a long prompt asked again is served partly
# from the cache (usage.prompt_tokens_details.cached_tokens) with the
# identical text; and, through Redis, by an engine restarted with an
# empty cache.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

plan skip_all => 'redis-server is not installed'
    unless grep { -x "$_/redis-server" } split /:/, $ENV{PATH};

my $prompt = 'The little dog ran to the park and played with a ball. ' x 12;
my %req = (model => 'stories', prompt => $prompt, max_tokens => 24,
           temperature => 0);

my $t = LLMTest->new;
$t->start_redis;
$t->start_engine('--redis', '127.0.0.1:' . $t->redis_port);
$t->start_nginx;
ok($t->wait_ready, 'attached');

my $cold = $t->post('/v1/completions', \%req);
is($cold->{status}, 200, 'a long prompt');
is($cold->{json}{usage}{prompt_tokens_details}{cached_tokens}, 0,
   'nothing cached the first time');

my $warm = $t->post('/v1/completions', \%req);
my $cached = $warm->{json}{usage}{prompt_tokens_details}{cached_tokens};
ok($cached > 100, "asked again: $cached of "
   . "$warm->{json}{usage}{prompt_tokens} prompt tokens from the cache");
is($warm->{json}{choices}[0]{text}, $cold->{json}{choices}[0]{text},
   'the identical text');

# the blocks went to Redis too: a restarted engine finds them there
ok(LLMTest::wait_for(sub {
    ($t->redis('DBSIZE') // 0) >= 10 }, 10), 'the blocks are in Redis');
$t->stop_engine;
$t->start_engine('--redis', '127.0.0.1:' . $t->redis_port);
ok($t->wait_ready, 'a restarted engine, its local cache empty');

my $again = $t->post('/v1/completions', \%req);
$cached = $again->{json}{usage}{prompt_tokens_details}{cached_tokens};
ok($cached > 100, "after the restart: $cached prompt tokens from Redis");
is($again->{json}{choices}[0]{text}, $cold->{json}{choices}[0]{text},
   'the identical text');


# the restart itself is logged; nothing else may be
is_deeply([ grep { !/engine "default" (lost|at ".*": connect)/ }
            $t->bad_log_lines ], [],
          'no errors in the nginx log but the restart');

done_testing;
