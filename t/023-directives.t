# The directives of the issue, through nginx -t: llm_model (a complex
# value), llm_max_n, llm_timeout, llm_queue_timeout and llm_metrics;
# bad values fail and the message quotes them.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;

my @good = (
    [ 'llm_model with a literal',
      { server => 'location /v1/ { llm_pass default; llm_model stories; }' } ],
    [ 'llm_model from split_clients',
      { http => 'split_clients "$http_authorization" $v { 10% b; * a; }',
        server => 'location /v1/ { llm_pass default; llm_model $v; }' } ],
    [ 'llm_model from a map of $llm_request_model',
      { http => 'map $llm_request_model $v { default $llm_request_model;'
                . ' gpt-4 stories; }',
        server => 'location /v1/ { llm_pass default; llm_model $v; }' } ],
    [ 'llm_model at http level, inherited',
      { http => 'llm_model "stories-$http_x_canary";' } ],
    [ 'llm_max_n 1 and 128',
      { server => 'location /a/ { llm_pass default; llm_max_n 1; }'
                  . ' location /b/ { llm_pass default; llm_max_n 128; }' } ],
    [ 'llm_timeout and llm_queue_timeout',
      { http => 'llm_timeout 30s; llm_queue_timeout 500ms;',
        server => 'location /v1/ { llm_pass default;'
                  . ' llm_queue_timeout 0; }' } ],
    [ 'llm_metrics in a location',
      { server => 'location /v1/ { llm_pass default; }'
                  . ' location = /metrics { llm_metrics; }' } ],
    [ 'variables in log_format',
      { http => 'log_format llm "$llm_model $llm_request_model'
                . ' $llm_prompt_tokens $llm_completion_tokens'
                . ' $llm_cached_tokens $llm_ttft_ms $llm_finish_reason";' } ],
);

for my $c (@good) {
    my ($name, $conf) = @$c;
    my ($rc, $out) = $t->nginx_test($t->nginx_conf(%$conf));
    is($rc, 0, "accepted: $name") or diag $out;
}

my $loc = sub { { server => "location /v1/ { llm_pass default; $_[0] }" } };

my @bad = (
    [ 'llm_max_n 0', $loc->('llm_max_n 0;'), qr/"0" in "llm_max_n"/ ],
    [ 'llm_max_n 129', $loc->('llm_max_n 129;'), qr/"129" in "llm_max_n"/ ],
    [ 'llm_max_n not a number', $loc->('llm_max_n many;'), qr/"many"/ ],
    [ 'llm_max_n twice', $loc->('llm_max_n 2; llm_max_n 3;'),
      qr/"llm_max_n" directive is duplicate/ ],
    [ 'llm_timeout 0', $loc->('llm_timeout 0;'), qr/"0" in "llm_timeout"/ ],
    [ 'llm_timeout not a time', $loc->('llm_timeout soon;'),
      qr/"soon" in "llm_timeout"/ ],
    [ 'llm_queue_timeout not a time', $loc->('llm_queue_timeout 1x;'),
      qr/"1x" in "llm_queue_timeout"/ ],
    [ 'llm_queue_timeout negative', $loc->('llm_queue_timeout -1s;'),
      qr/"-1s" in "llm_queue_timeout"/ ],
    [ 'llm_model with a bad variable', $loc->('llm_model "$";'),
      qr/invalid variable name/ ],
    [ 'llm_model of an unknown variable', $loc->('llm_model $nosuch;'),
      qr/unknown "nosuch" variable/ ],
    [ 'llm_model twice', $loc->('llm_model a; llm_model b;'),
      qr/"llm_model" directive is duplicate/ ],
    [ 'llm_model without a value', $loc->('llm_model;'),
      qr/invalid number of arguments in "llm_model"/ ],
    [ 'llm_metrics with an argument',
      { server => 'location = /m { llm_metrics on; }' },
      qr/invalid number of arguments in "llm_metrics"/ ],
    [ 'llm_metrics at server level',
      { server => 'llm_metrics;' },
      qr/"llm_metrics" directive is not allowed/ ],
    [ 'an engine name too long for the metrics',
      { engines => 'llm_engine ' . ('e' x 64) . ' unix:/tmp/x.sock;' },
      qr/"e{64}"/ ],
);

for my $c (@bad) {
    my ($name, $conf, $re) = @$c;
    my ($rc, $out) = $t->nginx_test($t->nginx_conf(%$conf));
    isnt($rc, 0, "refused: $name");
    like($out, $re, "the message quotes it: $name");
}

# the example configurations in conf/, placeholders filled in as
# conf/demo.sh does
for my $name ('nginx.conf', 'nginx-ab.conf') {
    my $text = LLMTest::slurp("$LLMTest::ROOT/conf/$name");
    my %fill = (MODULE => $LLMTest::MODULE, SOCKET => $t->socket_path,
                PREFIX => $t->dir, PORT => $t->port);
    $text =~ s/@(MODULE|SOCKET|PREFIX|PORT)@/$fill{$1}/g;
    mkdir $t->dir . '/logs';
    my ($rc, $out) = $t->nginx_test($text);
    is($rc, 0, "conf/$name passes nginx -t") or diag $out;
}

done_testing;
