package LLMTest;

# Starts a real llm-engine and a real nginx (with the module built in
# build/) on free ports in a temporary directory, talks HTTP to them, and
# stops everything when the test ends.  Perl core modules only.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IO::Socket::INET;
use IO::Socket::UNIX;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep);

our $ROOT = abs_path(__FILE__ =~ s{t/lib/LLMTest\.pm$}{}r || '.');
our $BUILD = $ENV{LLM_BUILD} ? abs_path($ENV{LLM_BUILD}) : "$ROOT/build";
our $ENGINE = "$BUILD/llm-engine";
our $MODULE = "$BUILD/ngx_http_llm_module.so";
our $NGINX = $ENV{NGINX} || '/usr/sbin/nginx';
# make SAN=1 test: the stock nginx hosts an ASan module only with the
# ASan runtime loaded first; LeakSanitizer stays off there, since nginx
# itself leaves its cycle's memory to the exit (the engine keeps it on)
our $NGX_ASAN = join ':', grep { length } $ENV{ASAN_OPTIONS} // '',
    'detect_leaks=0';
our $PRELOAD = $ENV{LLM_SAN_PRELOAD}
    ? "LD_PRELOAD=$ENV{LLM_SAN_PRELOAD} ASAN_OPTIONS=$NGX_ASAN " : '';
our $MODEL = "$ROOT/models/stories260K.gguf";
our $FIXTURES = $ENV{LLM_FIXTURES} || abs_path("$ROOT/../shared/fixtures")
    || "$ROOT/../shared/fixtures";

my $json = JSON::PP->new->utf8->canonical;

sub new {
    my ($class, %args) = @_;
    my $self = bless {
        dir => tempdir('ngx_llm_t_XXXXXX', TMPDIR => 1,
                       CLEANUP => !$ENV{LLM_KEEP}),
        models => $args{models} || { stories => $MODEL },
        engine_args => $args{engine_args} || [],
        pids => {},
        owner => $$,
        generation => 0,
    }, $class;
    $self->{socket} = "$self->{dir}/engine.sock";
    $self->{port} = free_port();
    return $self;
}

sub dir { $_[0]{dir} }
sub port { $_[0]{port} }
sub socket_path { $_[0]{socket} }
sub url { my ($self, $path) = @_; "http://127.0.0.1:$self->{port}$path" }

sub free_port {
    my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => '127.0.0.1',
                                  LocalPort => 0, Proto => 'tcp')
        or die "no free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

# --- engine ---------------------------------------------------------------

sub start_engine {
    my ($self, @extra) = @_;
    my @cmd = ($ENGINE, 'serve', '--socket', $self->{socket});
    for my $name (sort keys %{ $self->{models} }) {
        push @cmd, '--model', "$name=$self->{models}{$name}";
    }
    push @cmd, @{ $self->{engine_args} }, @extra;

    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', "$self->{dir}/engine.log";
        open STDERR, '>&', \*STDOUT;
        exec @cmd or die "exec $ENGINE: $!";
    }
    $self->{pids}{engine} = $pid;

    # ready when the socket accepts
    for (1 .. 200) {
        my $c = IO::Socket::UNIX->new(Peer => $self->{socket});
        if ($c) { close $c; return $pid }
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{pids}{engine};
            die "engine exited: " . $self->engine_log;
        }
        sleep 0.05;
    }
    die "engine did not come up: " . $self->engine_log;
}

sub engine_pid { $_[0]{pids}{engine} }

sub stop_engine {
    my ($self, $sig) = @_;
    my $pid = delete $self->{pids}{engine} or return;
    kill $sig || 'TERM', $pid;
    waitpid($pid, 0);
    return $?;
}

sub engine_log { slurp("$_[0]{dir}/engine.log") }

# --- nginx ----------------------------------------------------------------

# $http: extra text inside http {}, $server: extra text inside server {};
# the default location /v1/ passes to engine "default".  GET /generation
# answers how many times this configuration was (re)loaded.
sub nginx_conf {
    my ($self, %o) = @_;
    my $d = $self->{dir};
    my $gen = $self->{generation};
    my $http = $o{http} // '';
    my $server = $o{server} // "location /v1/ { llm_pass default; }\n";
    my $engines = $o{engines}
        // "llm_engine default unix:$self->{socket};\n";
    my $workers = $o{workers} // 2;
    # workers run as the test's own user, so they may use the engine's
    # socket (mode 0660, owned by that user)
    my $user = $> == 0 ? "user root;" : "";
    return <<"CONF";
load_module $MODULE;
$user
worker_processes $workers;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/error.log info;
events { worker_connections 1024; }
http {
    access_log $d/access.log;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fastcgi;
    uwsgi_temp_path $d/uwsgi;
    scgi_temp_path $d/scgi;
    $engines
    $http
    server {
        listen 127.0.0.1:$self->{port};
        location = /static { return 200 "static ok\\n"; }
        location = /generation { return 200 "$gen"; }
        $server
    }
}
CONF
}

sub write_conf {
    my ($self, $text) = @_;
    my $file = "$self->{dir}/nginx.conf";
    open my $fh, '>', $file or die "$file: $!";
    print $fh $text;
    close $fh;
    return $file;
}

# runs nginx -t on a configuration; returns (exit code, output)
sub nginx_test {
    my ($self, $text) = @_;
    my $file = $self->write_conf($text);
    my $out = `$PRELOAD$NGINX -t -p $self->{dir} -c $file 2>&1`;
    return ($? >> 8, $out);
}

sub start_nginx {
    my ($self, %o) = @_;
    my $file = $self->write_conf($self->nginx_conf(%o));
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', "$self->{dir}/nginx.out";
        open STDERR, '>&', \*STDOUT;
        if ($ENV{LLM_SAN_PRELOAD}) {
            $ENV{LD_PRELOAD} = $ENV{LLM_SAN_PRELOAD};
            $ENV{ASAN_OPTIONS} = $NGX_ASAN;
        }
        exec $NGINX, '-p', $self->{dir}, '-c', $file
            or die "exec $NGINX: $!";
    }
    $self->{pids}{nginx} = $pid;
    for (1 .. 200) {
        my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $self->{port});
        if ($c) { close $c; return $pid }
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{pids}{nginx};
            die "nginx exited: " . slurp("$self->{dir}/nginx.out")
                . $self->error_log;
        }
        sleep 0.05;
    }
    die "nginx did not come up: " . $self->error_log;
}

# rewrites the configuration (same options as start_nginx), sends HUP
# and waits until the new workers answer
sub reload_nginx {
    my ($self, %o) = @_;
    my $pid = $self->{pids}{nginx} or die "nginx is not running";
    $self->{generation}++;
    $self->write_conf($self->nginx_conf(%o));
    kill 'HUP', $pid;
    my $want = $self->{generation};
    return wait_for(sub {
        ($self->get('/generation')->{content} // '') eq $want }, 10);
}

sub stop_nginx {
    my ($self) = @_;
    my $pid = delete $self->{pids}{nginx} or return;
    kill 'QUIT', $pid;
    for (1 .. 100) {
        return if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

sub error_log { slurp("$_[0]{dir}/error.log") }

# [error], [crit], [alert] and [emerg] lines of nginx's error log
sub bad_log_lines {
    my ($self) = @_;
    return grep { /\[(error|crit|alert|emerg)\]/ }
        split /\n/, $self->error_log;
}

# waits until the workers are attached to the engine (a models list works)
sub wait_ready {
    my ($self, $path) = @_;
    $path //= '/v1/models';
    # one worker may attach before the others: answers in a row, spread
    # over the workers by the kernel, tell that all of them are
    my $row = 0;
    for (1 .. 400) {
        my $r = $self->get($path);
        $row = $r->{status} == 200 ? $row + 1 : 0;
        return 1 if $row == 8;
        sleep 0.05 unless $row;
    }
    return 0;
}

# --- redis ----------------------------------------------------------------

# a real redis-server on a free port (the same one again after a stop, so
# that nginx finds it where it was); @args go on its command line
sub start_redis {
    my ($self, @args) = @_;
    $self->{redis_port} //= free_port();
    my @cmd = ('redis-server', '--port', $self->{redis_port},
               '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
               '--daemonize', 'no', '--dir', $self->{dir}, @args);
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', "$self->{dir}/redis.log";
        open STDERR, '>&', \*STDOUT;
        exec @cmd or die "exec redis-server: $!";
    }
    $self->{pids}{redis} = $pid;
    $self->{redis_args} = [ @args ];
    for (1 .. 200) {
        my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $self->{redis_port});
        if ($c) { close $c; return $pid }
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $self->{pids}{redis};
            die "redis-server exited: " . slurp("$self->{dir}/redis.log");
        }
        sleep 0.05;
    }
    die "redis-server did not come up: " . slurp("$self->{dir}/redis.log");
}

sub redis_port { $_[0]{redis_port} }
sub redis_pid { $_[0]{pids}{redis} }

# SIGKILL by default: Redis is gone at once, as after a crash
sub stop_redis {
    my ($self, $sig) = @_;
    my $pid = delete $self->{pids}{redis} or return;
    kill 'CONT', $pid;
    kill $sig || 'KILL', $pid;
    waitpid($pid, 0);
}

# one command over RESP; returns the reply (errors as "ERR: ..."), or
# undef when Redis does not answer within 5 seconds.  A hash first gives
# options: port, auth (a password), db
sub redis {
    my ($self, @cmd) = @_;
    my %o = ref $cmd[0] eq 'HASH' ? %{ shift @cmd } : ();
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $o{port} || $self->{redis_port},
                                  Timeout => 5)
        or return undef;
    my @all = (($o{auth} ? (['AUTH', $o{auth}]) : ()),
               ($o{db} ? (['SELECT', $o{db}]) : ()), \@cmd);
    my $req = '';
    for my $c (@all) {
        $req .= '*' . @$c . "\r\n";
        $req .= '$' . length($_) . "\r\n$_\r\n" for @$c;
    }
    print $s $req;
    my $reply;
    $reply = resp_read($s) for @all;
    close $s;
    return $reply;
}

sub resp_read {
    my ($s) = @_;
    local $SIG{ALRM} = sub { die "redis timeout\n" };
    alarm 5;
    my $r = eval { resp_value($s) };
    alarm 0;
    return $r;
}

sub resp_value {
    my ($s) = @_;
    my $line = <$s>;
    return undef unless defined $line;
    $line =~ s/\r\n$//;
    my ($t, $v) = (substr($line, 0, 1), substr($line, 1));
    return $v if $t eq '+' || $t eq ':';
    return "ERR: $v" if $t eq '-';
    if ($t eq '$') {
        return undef if $v < 0;
        my $buf = '';
        read($s, $buf, $v + 2);
        return substr($buf, 0, $v);
    }
    if ($t eq '*') {
        return undef if $v < 0;
        return [ map { resp_value($s) } 1 .. $v ];
    }
    die "bad RESP line: $line\n";
}

# --- HTTP -----------------------------------------------------------------

sub http { HTTP::Tiny->new(timeout => 30, keep_alive => 0) }

# %o: headers => {...}, ua => an HTTP::Tiny to use
sub get {
    my ($self, $path, %o) = @_;
    my $ua = $o{ua} || http();
    return decorate($ua->get($self->url($path),
                             { headers => $o{headers} || {} }));
}

# body: a hash (encoded as JSON) or a raw string; %o as for get
sub post {
    my ($self, $path, $body, %o) = @_;
    my $ua = $o{ua} || http();
    $body = $json->encode($body) if ref $body;
    return decorate($ua->request('POST', $self->url($path), {
        headers => { 'Content-Type' => 'application/json',
                     %{ $o{headers} || {} } },
        content => $body,
    }));
}

sub decorate {
    my ($r) = @_;
    $r->{json} = eval { $json->decode($r->{content}) }
        if defined $r->{content} && length $r->{content};
    return $r;
}

# a streaming POST; returns the response with {events} = the decoded
# data: payloads in order ('[DONE]' kept as the string) and {chunks} = the
# raw body pieces as they arrived; %o as for get
sub post_stream {
    my ($self, $path, $body, %o) = @_;
    $body->{stream} = JSON::PP::true;
    my @chunks;
    my $r = http()->request('POST', $self->url($path), {
        headers => { 'Content-Type' => 'application/json',
                     %{ $o{headers} || {} } },
        content => $json->encode($body),
        data_callback => sub { push @chunks, $_[0] },
    });
    $r->{chunks} = \@chunks;
    $r->{content} = join '', @chunks;
    $r->{events} = [ parse_sse($r->{content}) ];
    return $r;
}

sub parse_sse {
    my ($text) = @_;
    my @ev;
    for my $block (split /\n\n/, $text) {
        next unless $block =~ /^data: (.*)$/s;
        my $d = $1;
        push @ev, $d eq '[DONE]' ? $d : (eval { $json->decode($d) } // {
            unparsed => $d });
    }
    return @ev;
}

# a raw connection for the tests that misbehave as clients
sub raw_request {
    my ($self, $text) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $self->{port})
        or die "connect: $!";
    $s->autoflush(1);
    print $s $text;
    return $s;
}

sub json { $json }

# checks an OpenAI error object: status, the four fields, JSON; %want
# compares fields of "error" (a regexp compares with like)
sub is_error {
    my ($r, $status, $name, %want) = @_;
    my $tb = Test::More->builder;
    $tb->is_num($r->{status}, $status, "$name: status $status")
        or $tb->diag($r->{content} // '');
    my $e = ref $r->{json} eq 'HASH' ? $r->{json}{error} : undef;
    $tb->ok(ref $e eq 'HASH' && defined $e->{message}
            && length $e->{message} && defined $e->{type}
            && exists $e->{param} && exists $e->{code},
            "$name: an OpenAI error object")
        or $tb->diag($r->{content} // '');
    for my $k (sort keys %want) {
        if (ref $want{$k} eq 'Regexp') {
            $tb->like($e->{$k}, $want{$k}, "$name: $k");
        } else {
            $tb->is_eq($e->{$k}, $want{$k}, "$name: $k");
        }
    }
    $tb->like($r->{headers}{'content-type'} // '', qr{^application/json},
              "$name: JSON content type");
}

# --- misc -----------------------------------------------------------------

sub slurp {
    my ($file) = @_;
    open my $fh, '<', $file or return '';
    local $/;
    return <$fh>;
}

sub wait_for {
    my ($cond, $secs) = @_;
    for (1 .. ($secs || 5) * 20) {
        return 1 if $cond->();
        sleep 0.05;
    }
    return 0;
}

sub DESTROY {
    my ($self) = @_;
    return if $$ != $self->{owner};     # a forked client, not the test
    local $?;                           # waitpid must not set the exit code
    $self->stop_nginx;
    $self->stop_engine('KILL');
    $self->stop_redis;
}

1;
