#!/usr/bin/perl
exec "./build/t/test_redis_kv" or die "run make first: $!\n";
