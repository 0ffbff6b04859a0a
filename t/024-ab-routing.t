# A/B routing between two versions of a model served by one engine:
# split_clients on the API key chooses the version through llm_model.
# Over 2000 keys the split matches the configured 10%, each key always
# lands on the same version, the response's model and X-LLM-Model name
# it, and the access log and metrics tell the versions apart.  A canary
# chosen by a header (map) and aliases of $llm_request_model work the
# same way.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $KEYS = 2000;

my $t = LLMTest->new(models => { 'stories-v1' => $LLMTest::MODEL,
                                 'stories-v2' => $LLMTest::MODEL });
my $log = $t->dir . '/ab.log';

$t->start_engine;
$t->start_nginx(http => <<'HTTP', server => <<"SERVER");
    split_clients "$http_authorization" $llm_version {
        10%     stories-v2;
        *       stories-v1;
    }
    map $http_x_canary $canary {
        default "";
        "1"     stories-v2;
    }
    map $llm_request_model $alias {
        gpt-4o-mini     stories-v2;
        default         "";
    }
    log_format ab '$http_authorization|$llm_request_model|$llm_model|'
                  '$llm_completion_tokens|$llm_finish_reason';
HTTP
    location /v1/ {
        llm_pass default;
        llm_model \$llm_version;
        access_log $log ab;
    }
    location /canary/v1/ {
        llm_pass default;
        llm_model \$canary;
    }
    location /alias/v1/ {
        llm_pass default;
        llm_model \$alias;
    }
    location /typo/v1/ {
        llm_pass default;
        llm_model stories-v3;
    }
    location = /metrics {
        llm_metrics;
    }
SERVER
ok($t->wait_ready, 'workers attached');

my %req = (model => 'stories', prompt => 'Once', max_tokens => 1,
           temperature => 0);

sub ask {
    my ($key) = @_;
    my $r = $t->post('/v1/completions', \%req,
                     headers => { Authorization => "Bearer $key" });
    return ($r->{status}, $r->{json}{model} // '',
            $r->{headers}{'x-llm-model'} // '');
}

my (%version, %count, $bad, $mismatch);
for my $i (1 .. $KEYS) {
    my ($status, $model, $header) = ask("sk-test-$i");
    $bad++ if $status != 200;
    $mismatch++ if $model ne $header;
    $version{$i} = $model;
    $count{$model}++;
}

is($bad // 0, 0, "$KEYS requests answered 200");
is($mismatch // 0, 0, 'X-LLM-Model always names the response model');
is_deeply([ sort keys %count ], [ 'stories-v1', 'stories-v2' ],
          'both versions served, nothing else');

my $share = 100 * ($count{'stories-v2'} // 0) / $KEYS;
note(sprintf 'split over %d keys: stories-v2 %d (%.2f%%), stories-v1 %d',
     $KEYS, $count{'stories-v2'} // 0, $share, $count{'stories-v1'} // 0);
ok(abs($share - 10) <= 3,
   sprintf('stories-v2 got %.2f%% of the keys, 10%% +- 3 configured', $share));

# stickiness: every key asked again lands where it did
my $moved = 0;
for my $i (grep { $_ % 4 == 0 } 1 .. $KEYS) {
    my (undef, $model) = ask("sk-test-$i");
    $moved++ if $model ne $version{$i};
}
is($moved, 0, 'every key asked again got the same version');

# the access log tells them apart: one line per request, in order
my @lines = grep { /sk-test-/ } split /\n/, LLMTest::slurp($log);
my @first = @lines[0 .. $KEYS - 1];
my $logged = grep {
    my ($auth, $asked, $served, $tokens, $finish) = split /\|/;
    my ($i) = $auth =~ /sk-test-(\d+)$/;
    defined $i && $asked eq 'stories' && $served eq $version{$i}
        && $tokens eq '1' && $finish eq 'length';
} @first;
is($logged, $KEYS, 'the log has $llm_request_model, $llm_model and usage'
                   . ' for every request');

# the metrics count each version apart
my $m = $t->get('/metrics')->{content};
my %served;
for my $v ('stories-v1', 'stories-v2') {
    ($served{$v}) = $m =~ /^llm_requests_total\{engine="default",
                            model="\Q$v\E",status="200"\}\s(\d+)$/mx;
}
my %want = map { $_ => $count{$_} } keys %count;
$want{ $version{$_} }++ for grep { $_ % 4 == 0 } 1 .. $KEYS;
is($served{'stories-v1'}, $want{'stories-v1'}, 'metrics: stories-v1 requests');
is($served{'stories-v2'}, $want{'stories-v2'}, 'metrics: stories-v2 requests');
like($m, qr/^llm_completion_tokens_total\{engine="default",
              model="stories-v2"\}\s$want{'stories-v2'}$/mx,
     'metrics: completion tokens per version');
like($m, qr/^llm_time_to_first_token_seconds_count\{engine="default",
              model="stories-v2"\}\s$want{'stories-v2'}$/mx,
     'metrics: time to first token per version');

# a canary by header; without it the client's model is served
my $r = $t->post('/canary/v1/completions', { %req, model => 'stories-v1' },
                 headers => { 'X-Canary' => '1' });
is($r->{json}{model}, 'stories-v2', 'canary header: the canary serves');
is($r->{headers}{'x-llm-model'}, 'stories-v2', 'canary: X-LLM-Model');
$r = $t->post('/canary/v1/completions', { %req, model => 'stories-v1' });
is($r->{json}{model}, 'stories-v1',
   'no canary header: llm_model is empty, the client\'s model serves');
$r = $t->post('/canary/v1/chat/completions', {
    model => 'stories-v1', max_tokens => 1,
    messages => [{ role => 'user', content => 'Hi' }] },
    headers => { 'X-Canary' => '1' });
is($r->{json}{model}, 'stories-v2', 'canary: chat too');

# $llm_request_model in a map: aliases for the names clients know
$r = $t->post('/alias/v1/completions', { %req, model => 'gpt-4o-mini' });
is($r->{json}{model}, 'stories-v2', 'an alias from $llm_request_model');
$r = $t->post('/alias/v1/completions', { %req, model => 'stories-v1' });
is($r->{json}{model}, 'stories-v1', 'no alias: the client\'s model');

LLMTest::is_error($t->post('/typo/v1/completions', \%req), 404,
                  'llm_model naming no served version',
                  code => 'model_not_found', message => qr/stories-v3/);

is_deeply([ grep { !/stories-v3/ } $t->bad_log_lines ], [],
          'no errors in the nginx log');

done_testing;
