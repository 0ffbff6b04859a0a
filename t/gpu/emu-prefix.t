# The prefix cache's Redis tier with the engine on the CUDA emulator
# (t/gpu/emu/README.md), for a model the GPU keeps an f16 KV cache for:
# its blocks cross to Redis as f32 and back, and a restarted engine
# serves a prompt from them with the text it gave cold; an f32 engine's
# blocks (the CPU's) are not taken, since they are not what the GPU
# would have computed.

use strict;
use warnings;
use Cwd ();
use FindBin;
use lib Cwd::abs_path("$FindBin::Bin/../lib");
use Test::More;
use LLMTest;

my $E = "$LLMTest::BUILD/emu/llm-engine";
my $M = "$LLMTest::FIXTURES/models/tiny-llama3-f16.gguf";

plan skip_all => 'the CUDA emulator is not built here' unless -x $E;
plan skip_all => "no fixture $M" unless -f $M;
plan skip_all => 'redis-server is not installed'
    unless grep { -x "$_/redis-server" } split /:/, $ENV{PATH};

my $prompt = 'The little dog ran to the park and played with a ball. ' x 6;
my %req = (model => 'm', prompt => $prompt, max_tokens => 6,
           temperature => 0);

my $t = LLMTest->new(models => { m => $M });
$t->start_redis;
my @redis = ('--redis', '127.0.0.1:' . $t->redis_port);

# the CPU's blocks first
$t->start_engine(@redis);
$t->start_nginx;
ok($t->wait_ready, 'the CPU engine attached');

my $cpu = $t->post('/v1/completions', \%req);
is($cpu->{status}, 200, 'a long prompt on the CPU');
ok(LLMTest::wait_for(sub { ($t->redis('DBSIZE') // 0) >= 3 }, 20),
   'its blocks are in Redis');
$t->stop_engine;
my $n_cpu = $t->redis('DBSIZE');

sub gpu_engine {
    local $LLMTest::ENGINE = $E;
    $t->start_engine(@redis, '--backend', 'cuda');
    return $t->wait_ready;
}

ok(gpu_engine(), 'the engine on the emulated GPU attached');
like($t->engine_log, qr/KV cache of \d+ blocks .*f16\)/,
     'its KV cache is f16, the log says');

my $cold = $t->post('/v1/completions', \%req);
is($cold->{status}, 200, 'the same prompt on the GPU');
is($cold->{json}{usage}{prompt_tokens_details}{cached_tokens}, 0,
   "none of the CPU's blocks taken");
ok(LLMTest::wait_for(sub { ($t->redis('DBSIZE') // 0) > $n_cpu }, 20),
   "the GPU's blocks in Redis under keys of their own");

$t->stop_engine;
ok(gpu_engine(), 'restarted, its local cache empty');

my $warm = $t->post('/v1/completions', \%req);
my $cached = $warm->{json}{usage}{prompt_tokens_details}{cached_tokens};
ok($cached >= 32, "$cached prompt tokens from Redis");
is($warm->{json}{choices}[0]{text}, $cold->{json}{choices}[0]{text},
   'the text it gave cold');

done_testing;
