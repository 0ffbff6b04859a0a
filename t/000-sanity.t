# Directive parsing and configuration-time errors, through nginx -t.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use LLMTest;

my $t = LLMTest->new;

my ($rc, $out) = $t->nginx_test($t->nginx_conf);
is($rc, 0, 'the default test configuration is accepted') or diag $out;

($rc, $out) = $t->nginx_test($t->nginx_conf(
    server => "location /v1/ { llm_pass default; llm_max_tokens 64; }"));
is($rc, 0, 'llm_max_tokens in a location') or diag $out;

($rc, $out) = $t->nginx_test($t->nginx_conf(
    http => 'llm_max_tokens 32;',
    server => "location /api/ { llm_pass default; }"));
is($rc, 0, 'llm_max_tokens at http level, llm_pass under /api/')
    or diag $out;

($rc, $out) = $t->nginx_test($t->nginx_conf(
    engines => "llm_engine a unix:/tmp/a.sock; llm_engine b unix:/tmp/b.sock;",
    server => "location /a/ { llm_pass a; } location /b/ { llm_pass b; }"));
is($rc, 0, 'two engines, one per location') or diag $out;

my @bad = (
    [ 'unknown engine in llm_pass',
      { server => 'location /v1/ { llm_pass nosuch; }' }, qr/nosuch/ ],
    [ 'llm_max_tokens not a number',
      { server => 'location /v1/ { llm_pass default; llm_max_tokens lots; }' },
      qr/lots/ ],
    [ 'llm_max_tokens zero',
      { server => 'location /v1/ { llm_pass default; llm_max_tokens 0; }' },
      qr/"0"/ ],
    [ 'llm_engine address not unix:',
      { engines => 'llm_engine default 127.0.0.1:9;' }, qr/127\.0\.0\.1:9/ ],
    [ 'llm_engine defined twice',
      { engines => 'llm_engine default unix:/tmp/a.sock;'
                   . ' llm_engine default unix:/tmp/b.sock;' },
      qr/default/ ],
    [ 'llm_pass without an argument',
      { server => 'location /v1/ { llm_pass; }' }, qr/llm_pass/ ],
    [ 'llm_pass twice in a location',
      { server => 'location /v1/ { llm_pass default; llm_pass default; }' },
      qr/duplicate|llm_pass/ ],
    [ 'llm_engine inside a location',
      { server => 'location /v1/ { llm_engine x unix:/tmp/x.sock; }' },
      qr/llm_engine/ ],
);

for my $case (@bad) {
    my ($name, $conf, $re) = @$case;
    ($rc, $out) = $t->nginx_test($t->nginx_conf(%$conf));
    isnt($rc, 0, "refused: $name");
    like($out, $re, "the message names the bad value: $name");
}

done_testing;
