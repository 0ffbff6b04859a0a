#!/usr/bin/perl
# Copyright (C) ngx_llm developers
#
# A kernel file (.cu) as the CPU emulator compiles it (t/gpu/emu/README.md):
# launches k<<<grid, block[, smem[, stream]]>>>(args) become
# llm_emu_launch_k(llm_emu_cfg_of(grid, ...), "k", k, args), and
# "extern __shared__ T name[];" a pointer to the launch's dynamic shared
# memory.  Lines keep their numbers.  Usage: emu-cu.pl in.cu > out.cc

use strict;
use warnings;

local $/;
my $file = $ARGV[0] or die "usage: emu-cu.pl file.cu\n";
open(my $in, '<', $file) or die "emu-cu.pl: $file: $!\n";
my $src = <$in>;
close($in);

$src =~ s{\b(\w+(?:<[\w\s,]*>)?)(\s*)<<<(.*?)>>>(\s*)\(}
         {"llm_emu_launch_k(llm_emu_cfg_of($3), \"$1\", $1," . nl($2 . $4)}gse;

$src =~ s{extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?(\w+)\s+(\w+)\s*\[\s*\]\s*;}
         {$1 *$2 = ($1 *) llm_emu_dyn_smem();}g;

die "emu-cu.pl: $file: a launch or extern __shared__ left over\n"
    if $src =~ /<<<|>>>|extern\s+__shared__/;

print "#line 1 \"$file\"\n", $src;

# the newlines a rewrite dropped, kept so that lines keep their numbers
sub nl {
    my ($s) = @_;
    return "\n" x ($s =~ tr/\n//);
}
