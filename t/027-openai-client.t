# The official openai Python package against the module: chat and
# completions, streaming and not, errors as the client's exceptions, and
# two versions behind one A/B split (t/py/openai_client.py does the
# talking; each of its checks is a test here).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $python = $ENV{PYTHON} || 'python3';
my $have = `$python -c 'import openai; print(openai.__version__)' 2>&1`;
plan skip_all => "the openai package is missing (make deps installs it): "
                 . (split /\n/, $have)[-1]
    if $? != 0;

my $t = LLMTest->new(models => { 'stories-v1' => $LLMTest::MODEL,
                                 'stories-v2' => $LLMTest::MODEL });
$t->start_engine;
$t->start_nginx(http => <<'HTTP', server => <<'SERVER');
    split_clients "$http_authorization" $version {
        50%     stories-v2;
        *       stories-v1;
    }
HTTP
    location /v1/ {
        llm_pass default;
        llm_max_tokens 64;
    }
    location /ab/v1/ {
        llm_pass default;
        llm_model $version;
    }
SERVER
ok($t->wait_ready, 'workers attached');

my $script = "$FindBin::Bin/py/openai_client.py";
my $out = `$python $script '${\ $t->url('/v1')}' '${\ $t->url('/ab/v1')}' 2>&1`;
my $rc = $? >> 8;

my $checks = 0;
for my $line (split /\n/, $out) {
    if ($line =~ /^(not )?ok - (.*)$/) {
        ok(!$1, "openai: $2");
        $checks++;
    } elsif ($line =~ /^# (.*)$/) {
        note($1);
    } else {
        diag($line);
    }
}
ok($checks >= 25, "the script ran its checks ($checks)");
is($rc, 0, 'the script exited with 0');

is_deeply([ grep { !/(?:nosuch|temperature)/ } $t->bad_log_lines ], [],
          'no errors in the nginx log');

done_testing;
