# ngx_llm: one entry point.
#
#   make              engine (CPU), nginx module, unit tests
#   make test         build, then prove -r t/
#   make demo         serve models/stories260K.gguf on 127.0.0.1:8080
#   make deps         install missing Debian packages (as root)
#   make SAN=1 ...    build with AddressSanitizer and UBSan, in build-san/
#   make CUDA=1 ...   add the CUDA backend (kernels/, cuBLAS, NCCL)

CC       ?= cc
ifeq ($(SAN),1)
BUILD    ?= build-san
endif
BUILD    ?= build
NGX_SRC  ?= /usr/share/nginx/src
NGINX    ?= /usr/sbin/nginx

CFLAGS_BASE = -std=gnu11 -O2 -g -pthread -fno-strict-aliasing \
              -Wall -Wextra -Wpointer-arith -Wstrict-prototypes \
              -Wwrite-strings -Werror -Iengine -Iengine/proto
LDLIBS      = -ljansson -lpcre2-8 -lhiredis -lm -pthread

ifeq ($(SAN),1)
CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer
LDFLAGS     += -fsanitize=address,undefined
endif

CFLAGS ?=
ALL_CFLAGS = $(CFLAGS_BASE) $(CFLAGS)

ENGINE_SRCS := $(wildcard engine/*.c)
ENGINE_OBJS := $(patsubst engine/%.c,$(BUILD)/engine/%.o,$(ENGINE_SRCS))
LIB_OBJS    := $(filter-out $(BUILD)/engine/main.o,$(ENGINE_OBJS))

UNIT_SRCS   := $(wildcard t/unit/test_*.c)
UNIT_BINS   := $(patsubst t/unit/%.c,$(BUILD)/t/%,$(UNIT_SRCS))

MODULE_SRCS := $(wildcard ngx_llm_module/*.c ngx_llm_module/*.h) \
               engine/proto/llm_proto.h engine/proto/llm_ring.h config

.PHONY: all engine module units tools test demo deps clean

all: engine module units tools loadgen

# make CUDA=1: kernels/*.cu through nvcc for sm_80 and sm_90 (A100,
# H100/H200) with line info for the profilers, and the engine's CUDA
# files compiled again with LLM_CUDA into $(BUILD)/cuda (plain builds
# get their stubs), linked with cuBLAS and NCCL; t/gpu/test_kernels is
# built only then.  The flavor stamp relinks every program when CUDA
# changes, so that one BUILD never mixes the two.
CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(CUDA_HOME)/bin/nvcc
NVFLAGS    = -O2 -g -lineinfo -std=c++17 \
             -Xcompiler -Wall,-Werror,-fno-strict-aliasing \
             -gencode arch=compute_80,code=sm_80 \
             -gencode arch=compute_90,code=sm_90 -Ikernels -Iengine
CUDA_C    := engine/llm_backend_cuda.c engine/llm_nccl.c
CUDA_DEPS := $(wildcard kernels/*.h kernels/*.cuh engine/*.h)
FLAVOR    := $(BUILD)/.flavor-$(if $(filter 1,$(CUDA)),cuda,cpu)

ifeq ($(CUDA),1)
CUDA_OBJS   := $(patsubst engine/%.c,$(BUILD)/cuda/%.o,$(CUDA_C)) \
               $(patsubst kernels/%.cu,$(BUILD)/cuda/%.o, \
                          $(wildcard kernels/*.cu))
ENGINE_OBJS := $(filter-out $(patsubst engine/%.c,$(BUILD)/engine/%.o, \
                                       $(CUDA_C)),$(ENGINE_OBJS)) \
               $(CUDA_OBJS)
LIB_OBJS    := $(filter-out $(BUILD)/engine/main.o,$(ENGINE_OBJS))
UNIT_BINS   += $(BUILD)/t/test_kernels
LDLIBS      += -L$(CUDA_HOME)/lib64 -lcudart -lcublas -lcublasLt -lnccl \
               -lstdc++
endif

$(BUILD)/cuda/%.o: engine/%.c $(CUDA_DEPS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DLLM_CUDA -Ikernels -isystem $(CUDA_HOME)/include \
	    -c -o $@ $<

$(BUILD)/cuda/%.o: kernels/%.cu $(CUDA_DEPS)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c -o $@ $<

$(BUILD)/t/test_kernels: t/gpu/test_kernels.c t/unit/tap.h $(LIB_OBJS) \
                         $(FLAVOR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DLLM_CUDA -It/unit -Ikernels \
	    -isystem $(CUDA_HOME)/include $(LDFLAGS) -o $@ $< $(LIB_OBJS) \
	    $(LDLIBS)

# The CPU emulator of CUDA (t/gpu/emu/README.md): the kernels, the CUDA
# backend and NCCL's all-reduce compiled against its headers, so that
# they run (slowly, with the device's checks) on a machine without a
# GPU: $(BUILD)/emu/llm-engine serves with --backend cuda, and
# $(BUILD)/emu/test_kernels holds every kernel to its CPU twin.  Built
# by default on x86-64 (the fibers switch in x86-64 assembly), not under
# SAN=1 (ASan does not follow the fibers' stacks).
CXX       ?= c++
EMU       ?= $(if $(filter 1,$(SAN)),0,$(if $(filter x86_64,$(shell uname -m)),1,0))
EMU_DIR    = $(BUILD)/emu
EMU_FLAGS  = -O2 -g -pthread -fno-strict-aliasing -Wall -Wextra -Werror \
             -It/gpu/emu/include -Ikernels -Iengine -Iengine/proto
EMU_KOBJS := $(patsubst kernels/%.cu,$(EMU_DIR)/kernels/%.o, \
                        $(wildcard kernels/*.cu))
EMU_OBJS   = $(patsubst engine/%.c,$(EMU_DIR)/engine/%.o,$(CUDA_C)) \
             $(EMU_KOBJS) $(EMU_DIR)/emu.o
EMU_BASE   = $(filter-out $(patsubst engine/%.c,$(BUILD)/engine/%.o, \
                                     $(CUDA_C) engine/main.c), \
                          $(patsubst engine/%.c,$(BUILD)/engine/%.o, \
                                     $(ENGINE_SRCS)))
EMU_HDRS  := $(wildcard t/gpu/emu/*.h t/gpu/emu/include/*.h) $(CUDA_DEPS)

ifeq ($(EMU),1)
all: emu
endif

.PHONY: emu
emu: $(EMU_DIR)/llm-engine $(EMU_DIR)/test_kernels $(EMU_DIR)/test_emu

# kept: the compiler's messages and a debugger name their lines
.PRECIOUS: $(EMU_DIR)/kernels/%.cc

$(EMU_DIR)/kernels/%.cc: kernels/%.cu t/gpu/emu/emu-cu.pl
	@mkdir -p $(dir $@)
	perl t/gpu/emu/emu-cu.pl $< > $@.tmp && mv $@.tmp $@

$(EMU_DIR)/kernels/%.o: $(EMU_DIR)/kernels/%.cc $(EMU_HDRS)
	$(CXX) -std=c++17 $(EMU_FLAGS) -Wno-unknown-pragmas \
	    -include t/gpu/emu/emu_device.h \
	    -c -o $@ $<

$(EMU_DIR)/test_emu.cc: t/gpu/emu/test_emu.cu t/gpu/emu/emu-cu.pl
	@mkdir -p $(dir $@)
	perl t/gpu/emu/emu-cu.pl $< > $@.tmp && mv $@.tmp $@

$(EMU_DIR)/test_emu: $(EMU_DIR)/test_emu.cc t/unit/tap.h $(EMU_HDRS) \
                     $(EMU_BASE) $(EMU_OBJS)
	$(CXX) -std=c++17 $(EMU_FLAGS) -Wno-unknown-pragmas -It/unit \
	    -include t/gpu/emu/emu_device.h -o $@ $< $(EMU_BASE) \
	    $(EMU_OBJS) $(LDLIBS)

$(EMU_DIR)/emu.o: t/gpu/emu/emu.cc $(EMU_HDRS)
	@mkdir -p $(dir $@)
	$(CXX) -std=c++17 $(EMU_FLAGS) -c -o $@ $<

$(EMU_DIR)/engine/%.o: engine/%.c $(EMU_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -DLLM_CUDA -It/gpu/emu/include -Ikernels \
	    -c -o $@ $<

$(EMU_DIR)/llm-engine: $(BUILD)/engine/main.o $(EMU_BASE) $(EMU_OBJS)
	$(CXX) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(EMU_DIR)/test_kernels: t/gpu/test_kernels.c t/unit/tap.h $(EMU_BASE) \
                         $(EMU_OBJS)
	$(CC) $(ALL_CFLAGS) -DLLM_CUDA -It/unit -Ikernels -It/gpu/emu/include \
	    -c -o $@.o $<
	$(CXX) $(LDFLAGS) -o $@ $@.o $(EMU_BASE) $(EMU_OBJS) $(LDLIBS)

$(FLAVOR):
	@mkdir -p $(BUILD) && rm -f $(BUILD)/.flavor-* && touch $@

engine: $(BUILD)/llm-engine
units: $(UNIT_BINS)
module: $(BUILD)/ngx_http_llm_module.so

$(BUILD)/engine/%.o: engine/%.c $(wildcard engine/*.h engine/proto/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/llm-engine: $(ENGINE_OBJS) $(FLAVOR)
	$(CC) $(LDFLAGS) -o $@ $(filter %.o,$^) $(LDLIBS)

# tools/gguf_write.c: random-weight GGUF files of real shapes (bench/);
# bench/sched_bench.c: the scheduler through the engine's protocol
tools: $(BUILD)/gguf-write $(BUILD)/sched-bench

$(BUILD)/sched-bench: bench/sched_bench.c t/unit/llm_test_client.h \
                      bench/llm_client.h $(LIB_OBJS) \
                      $(FLAVOR)
	$(CC) $(ALL_CFLAGS) -It/unit $(LDFLAGS) -o $@ $< $(LIB_OBJS) $(LDLIBS)

$(BUILD)/gguf-write: tools/gguf_write.c $(LIB_OBJS) $(FLAVOR)
	$(CC) $(ALL_CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJS) $(LDLIBS)

$(BUILD)/t/%: t/unit/%.c t/unit/tap.h t/unit/llm_test_client.h \
              t/unit/gguf_buf.h t/unit/utf8_check.h t/unit/xorshift.h \
              bench/llm_client.h $(LIB_OBJS) $(FLAVOR)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -It/unit $(LDFLAGS) -o $@ $< $(LIB_OBJS) $(LDLIBS)

# The module is compiled inside a private copy of Debian's nginx sources,
# configured with the flags Debian's nginx was built with, so that
# NGX_MODULE_SIGNATURE matches the installed binary.
$(BUILD)/nginx/objs/Makefile: $(NGX_SRC)/configure config
	@test -f $(NGX_SRC)/configure || { echo "nginx sources missing: run 'make deps' (package nginx-dev)"; exit 1; }
	rm -rf $(BUILD)/nginx && mkdir -p $(BUILD)/nginx
	cp -a $(NGX_SRC)/. $(BUILD)/nginx/
	cd $(BUILD)/nginx && . ./conf_flags && \
	    ./configure "$${NGX_CONF_FLAGS[@]}" \
	        --with-cc-opt="-g -O2 -fPIC $(if $(filter 1,$(SAN)),-fsanitize=address$(comma)undefined -fno-omit-frame-pointer)" \
	        --with-ld-opt="-fPIC $(if $(filter 1,$(SAN)),-fsanitize=address$(comma)undefined)" \
	        --add-dynamic-module=$(CURDIR) > configure.log 2>&1 || \
	    { tail -20 configure.log; exit 1; }

comma := ,
SHELL := /bin/bash

$(BUILD)/ngx_http_llm_module.so: $(BUILD)/nginx/objs/Makefile $(MODULE_SRCS)
	$(MAKE) -C $(BUILD)/nginx -f objs/Makefile modules
	cp $(BUILD)/nginx/objs/ngx_http_llm_module.so $@

# Under SAN=1 the sanitizers write their reports into $(BUILD)/san/
# instead of stderr (the tests' programs log to files nobody reads), the
# stock nginx gets the ASan runtime preloaded to host the instrumented
# module, and any report fails the run after prove.
SAN_LOGS = $(CURDIR)/$(BUILD)/san
SAN_ENV  = ASAN_OPTIONS=log_path=$(SAN_LOGS)/asan:detect_leaks=1 \
           UBSAN_OPTIONS=log_path=$(SAN_LOGS)/ubsan:print_stacktrace=1 \
           LLM_SAN_PRELOAD=$$($(CC) -print-file-name=libasan.so)

test: deps all
ifeq ($(SAN),1)
	rm -rf $(SAN_LOGS) && mkdir -p $(SAN_LOGS)
	$(SAN_ENV) LLM_BUILD=$(CURDIR)/$(BUILD) prove -r t/
	@if ls $(SAN_LOGS) | grep -q .; then \
	    head -n 40 $(SAN_LOGS)/*; \
	    echo "sanitizer reports in $(SAN_LOGS)"; exit 1; fi
else
	LLM_BUILD=$(CURDIR)/$(BUILD) prove -r t/
endif

demo: deps all
	./conf/demo.sh

deps:
	@./tools/deps.sh

clean:
	rm -rf $(BUILD)

# make fuzz: every parser of untrusted input under libFuzzer, ASan and
# UBSan, for FUZZ_SECONDS each, from seed corpora written by programs
# built from the same files (-DLLM_*_SEED_MAIN):
#
#   fuzz-template   the chat template interpreter (the chat fixtures)
#   fuzz-tokenizer  the tokenizers (the vocabulary fixtures)
#   fuzz-request    request bodies, in the engine's parser and the
#                   module's (the tests' bodies), and stop strings
#   fuzz-gguf       GGUF files through the reader, the tokenizer and the
#                   model loader (small fixture models, synthetic ones)
#   fuzz-ring       the event ring with a hostile peer, the region header
#                   check, and the module's decoding of the events
#
# The module's files are compiled against the headers of $(BUILD)/nginx,
# with the few nginx core functions they call in fuzz/fuzz_ngx.c.  What
# a target finds is written to $(BUILD)/fuzz/ (crash-*, leak-*,
# timeout-*, prefixed with the target's name).
FUZZ_CC       ?= clang
FUZZ_SECONDS  ?= 60
FUZZ_FIXTURES ?= ../shared/fixtures
FUZZ_CFLAGS    = -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined \
                 -fno-sanitize-recover=all
FUZZ_SRCS     := $(wildcard engine/llm_template*.c) engine/llm_common.c
FUZZ_TOK_SRCS := $(wildcard engine/llm_tokenizer*.c) engine/llm_gguf.c \
                 engine/llm_common.c
FUZZ_REQ_SRCS := engine/llm_request.c engine/llm_common.c
FUZZ_NGX_SRCS := fuzz/fuzz_ngx.c ngx_llm_module/ngx_http_llm_openai.c \
                 ngx_llm_module/ngx_http_llm_reply.c
FUZZ_NGX_INCS  = $(addprefix -I$(BUILD)/nginx/,src/core src/event \
                   src/event/modules src/os/unix objs src/http \
                   src/http/modules src/http/v2) \
                 -Iengine/proto -Ingx_llm_module
# the configured nginx tree, for its headers
FUZZ_NGX_CONF  = $(BUILD)/nginx/objs/Makefile
# the model loader with what it computes with; the CPU kernels are built
# by $(CC), uninstrumented (clang 14 lacks __builtin_cpu_supports("f16c"),
# and what they read is the mapped file, which ASan does not watch)
FUZZ_GGUF_SRCS := engine/llm_gguf.c engine/llm_model.c \
                  $(wildcard engine/llm_tokenizer*.c) \
                  engine/llm_backend_cpu.c engine/llm_backend_cuda.c \
                  engine/llm_threads.c engine/llm_tp.c engine/llm_nccl.c \
                  engine/llm_log.c engine/llm_common.c
FUZZ_KERN_OBJS := $(patsubst engine/%.c,$(BUILD)/fuzz/obj/%.o, \
                    engine/llm_quant.c $(wildcard engine/llm_cpu_*.c))

.PHONY: fuzz fuzz-template fuzz-tokenizer fuzz-request fuzz-gguf fuzz-ring

fuzz: fuzz-template fuzz-tokenizer fuzz-request fuzz-gguf fuzz-ring

fuzz-template: $(BUILD)/fuzz/fuzz_template $(BUILD)/fuzz/seed_template
	@mkdir -p $(BUILD)/fuzz/corpus
	$(BUILD)/fuzz/seed_template $(FUZZ_FIXTURES)/chat $(BUILD)/fuzz/corpus \
	    $(BUILD)/fuzz/template.dict
	$(BUILD)/fuzz/fuzz_template -max_total_time=$(FUZZ_SECONDS) \
	    -timeout=10 -dict=$(BUILD)/fuzz/template.dict \
	    -artifact_prefix=$(BUILD)/fuzz/ $(BUILD)/fuzz/corpus

fuzz-tokenizer: $(BUILD)/fuzz/fuzz_tokenizer $(BUILD)/fuzz/seed_tokenizer
	@mkdir -p $(BUILD)/fuzz/corpus-tokenizer
	$(BUILD)/fuzz/seed_tokenizer $(FUZZ_FIXTURES)/vocab \
	    $(BUILD)/fuzz/corpus-tokenizer $(BUILD)/fuzz/tokenizer.dict
	LLM_FIXTURES=$(FUZZ_FIXTURES) $(BUILD)/fuzz/fuzz_tokenizer \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	    -dict=$(BUILD)/fuzz/tokenizer.dict \
	    -artifact_prefix=$(BUILD)/fuzz/tokenizer- \
	    $(BUILD)/fuzz/corpus-tokenizer

fuzz-request: $(BUILD)/fuzz/fuzz_request $(BUILD)/fuzz/seed_request
	@mkdir -p $(BUILD)/fuzz/corpus-request
	$(BUILD)/fuzz/seed_request t/unit/test_request.c \
	    $(BUILD)/fuzz/corpus-request $(BUILD)/fuzz/request.dict
	$(BUILD)/fuzz/fuzz_request -max_total_time=$(FUZZ_SECONDS) \
	    -timeout=10 -dict=$(BUILD)/fuzz/request.dict \
	    -artifact_prefix=$(BUILD)/fuzz/request- \
	    $(BUILD)/fuzz/corpus-request

# the fixture models, up to 2 MB, are seeds whole (libFuzzer would cut
# them at 1 MB); they run for milliseconds, so their share of the
# mutations shrinks with their time
fuzz-gguf: $(BUILD)/fuzz/fuzz_gguf $(BUILD)/fuzz/seed_gguf
	@mkdir -p $(BUILD)/fuzz/corpus-gguf
	$(BUILD)/fuzz/seed_gguf $(FUZZ_FIXTURES) models/stories260K.gguf \
	    $(BUILD)/fuzz/corpus-gguf
	$(BUILD)/fuzz/fuzz_gguf -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	    -max_len=2097152 -entropic_scale_per_exec_time=1 \
	    -artifact_prefix=$(BUILD)/fuzz/gguf- $(BUILD)/fuzz/corpus-gguf

fuzz-ring: $(BUILD)/fuzz/fuzz_ring $(BUILD)/fuzz/seed_ring
	@mkdir -p $(BUILD)/fuzz/corpus-ring
	$(BUILD)/fuzz/seed_ring $(BUILD)/fuzz/corpus-ring
	$(BUILD)/fuzz/fuzz_ring -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	    -artifact_prefix=$(BUILD)/fuzz/ring- $(BUILD)/fuzz/corpus-ring

# the headers the targets and their seed programs share
$(addprefix $(BUILD)/fuzz/,fuzz_template seed_template fuzz_tokenizer \
    seed_tokenizer fuzz_request seed_request fuzz_gguf seed_gguf fuzz_ring \
    seed_ring): fuzz/fuzz_seed.h t/unit/utf8_check.h

$(BUILD)/fuzz/fuzz_template: fuzz/fuzz_template.c $(FUZZ_SRCS) engine/*.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Iengine -o $@ $< $(FUZZ_SRCS) -ljansson -lm

$(BUILD)/fuzz/seed_template: fuzz/fuzz_template.c $(FUZZ_SRCS) engine/*.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O1 -DLLM_TEMPLATE_SEED_MAIN -Iengine -o $@ $< \
	    $(FUZZ_SRCS) -ljansson -lm

$(BUILD)/fuzz/fuzz_tokenizer: fuzz/fuzz_tokenizer.c $(FUZZ_TOK_SRCS) \
                              engine/*.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Iengine -o $@ $< $(FUZZ_TOK_SRCS) \
	    -lpcre2-8 -lm -pthread

$(BUILD)/fuzz/seed_tokenizer: fuzz/fuzz_tokenizer.c $(FUZZ_TOK_SRCS) \
                              engine/*.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O1 -DLLM_TOKENIZER_SEED_MAIN -Iengine -o $@ $< \
	    $(FUZZ_TOK_SRCS) -lpcre2-8 -lm -pthread

$(BUILD)/fuzz/fuzz_request: fuzz/fuzz_request.c fuzz/fuzz_ngx.h \
                            $(FUZZ_REQ_SRCS) $(FUZZ_NGX_SRCS) \
                            $(MODULE_SRCS) engine/*.h $(FUZZ_NGX_CONF)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Iengine $(FUZZ_NGX_INCS) -o $@ $< \
	    $(FUZZ_REQ_SRCS) $(FUZZ_NGX_SRCS) -ljansson -lm

$(BUILD)/fuzz/seed_request: fuzz/fuzz_request.c engine/*.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O1 -DLLM_REQUEST_SEED_MAIN -Iengine -Iengine/proto \
	    -o $@ $<

$(BUILD)/fuzz/fuzz_gguf: fuzz/fuzz_gguf.c t/unit/gguf_buf.h \
                         $(FUZZ_GGUF_SRCS) $(FUZZ_KERN_OBJS) engine/*.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -Iengine -Iengine/proto -o $@ $< \
	    $(FUZZ_GGUF_SRCS) $(FUZZ_KERN_OBJS) -lpcre2-8 -lm -pthread

$(BUILD)/fuzz/obj/%.o: engine/%.c engine/*.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O2 -g -pthread -fno-strict-aliasing -Iengine \
	    -Iengine/proto -c -o $@ $<

$(BUILD)/fuzz/seed_gguf: fuzz/fuzz_gguf.c t/unit/gguf_buf.h engine/*.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O1 -DLLM_GGUF_SEED_MAIN -Iengine -Iengine/proto \
	    -o $@ $<

$(BUILD)/fuzz/fuzz_ring: fuzz/fuzz_ring.c fuzz/fuzz_ngx.h $(FUZZ_NGX_SRCS) \
                         $(MODULE_SRCS) $(FUZZ_NGX_CONF)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_NGX_INCS) -o $@ $< \
	    $(FUZZ_NGX_SRCS) -ljansson -lm

$(BUILD)/fuzz/seed_ring: fuzz/fuzz_ring.c engine/proto/*.h
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O1 -DLLM_RING_SEED_MAIN -Iengine/proto -o $@ $< -lm

# t/unit/test_openai.c, a unit test of what the fuzz targets found in the
# module's JSON code, is built the same way (this rule, not the engine
# tests' pattern), against the configured nginx tree's headers
$(BUILD)/t/test_openai: t/unit/test_openai.c t/unit/tap.h fuzz/fuzz_ngx.h \
                        $(FUZZ_NGX_SRCS) $(MODULE_SRCS) $(FUZZ_NGX_CONF)
	@mkdir -p $(dir $@)
	$(CC) -std=gnu11 -O2 -g -Wall -Wno-unused-parameter \
	    $(filter -fsanitize% -fno-omit%,$(CFLAGS_BASE)) $(FUZZ_NGX_INCS) \
	    -It/unit -Ifuzz $(LDFLAGS) -o $@ $< $(FUZZ_NGX_SRCS) -ljansson -lm

# bench/loadgen.c: the load generator (HTTP, SSE, and the engine's shared
# memory with --direct); make soak runs bench/soak.sh: 64 streams for
# SOAK_MINUTES, then checks errors, memory and the engine's counters
SOAK_MINUTES ?= 10

.PHONY: loadgen soak

loadgen: $(BUILD)/loadgen

$(BUILD)/loadgen: bench/loadgen.c bench/llm_client.h engine/proto/llm_proto.h \
                  engine/proto/llm_ring.h
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Ibench $(LDFLAGS) -o $@ $< -ljansson

soak: engine module loadgen
	BUILD=$(BUILD) SOAK_MINUTES=$(SOAK_MINUTES) ./bench/soak.sh
