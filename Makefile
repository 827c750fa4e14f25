# moe.c — a CPU engine for Mixture-of-Experts language models.
#   make        builds ./moe with what is installed; when something is missing it names the
#               Debian package and stops (it installs nothing)
#   make deps   installs what is missing to build and test (scripts/deps.sh, apt-get)
#   make test   installs what is missing, builds, runs every test
#   make demo   installs, builds, trains configs/math-tiny.json on generated math, solves
#   make fuzz   installs, builds the libFuzzer harnesses, runs each FUZZ_SECONDS (600) in turn
CC      := mpicc
# -O3 with native tuning off: the binary must run on any x86-64 (kernels pick features at run time)
CFLAGS  ?= -O3 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-format-truncation -fopenmp
BLASDIR := /usr/lib/x86_64-linux-gnu/openblas-openmp
BLASINC := /usr/include/x86_64-linux-gnu/openblas-openmp
# OpenMP build of OpenBLAS: a GEMM called inside our parallel regions runs on its thread
LDLIBS  := -L$(BLASDIR) -Wl,-rpath,$(BLASDIR) -lopenblas -lcjson -lpcre2-8 -lutf8proc -lmicrohttpd -lm
CPPFLAGS := -I$(BLASINC)

SRC := $(wildcard src/base/*.c src/kernels/*.c src/config/*.c src/ops/*.c src/moe/*.c src/model/*.c src/io/*.c \
                  src/data/*.c src/optim/*.c src/train/*.c src/infer/*.c src/serve/*.c src/sim/*.c src/dist/*.c src/parallel/*.c src/cmd/*.c)
OBJ := $(SRC:%.c=build/%.o)
LIB := build/libmoe.a

.PHONY: all test demo deps clean fuzz
all: moe

# Building changes nothing on the system: before any build, one line names the packages that
# hold what is missing, and make stops. test and demo install first, then build in a sub-make.
ifneq ($(filter-out deps clean test demo fuzz,$(or $(MAKECMDGOALS),all)),)
  MISSING := $(shell BLASDIR=$(BLASDIR) BLASINC=$(BLASINC) bash scripts/deps.sh check)
  ifneq ($(MISSING),)
    $(error $(MISSING))
  endif
endif

deps:
	@bash scripts/deps.sh

build/%.o: %.c $(wildcard src/*/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# moe serve's page is built into the binary as it is (src/serve/page.c: .incbin)
build/src/serve/page.o: src/serve/page.html

$(LIB): $(OBJ)
	ar rcs $@ $^

moe: build/src/moe.o $(LIB)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

build/test_ops: tests/test_ops.c $(LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) $^ -o $@ $(LDLIBS)

build/test_tok: tests/test_tok.c $(LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) -Isrc $^ -o $@ $(LDLIBS)

build/test_io: tests/test_io.c $(LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) $^ -o $@ $(LDLIBS)

build/test_pipe: tests/test_pipe.c $(LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) $^ -o $@ $(LDLIBS)

build/test_dist_groups: tests/test_dist_groups.c $(LIB)
	$(CC) $(CPPFLAGS) $(CFLAGS) $^ -o $@ $(LDLIBS)

# AddressSanitizer + UBSan build of the binary, for the bad-input tests
build/asan/moe: $(SRC) src/moe.c $(wildcard src/*/*.h) src/serve/page.html
	@mkdir -p build/asan
	$(CC) $(CPPFLAGS) -std=c11 -D_GNU_SOURCE -O1 -g -fopenmp -fsanitize=address,undefined \
	  -fno-omit-frame-pointer $(SRC) src/moe.c -o $@ $(LDLIBS)

# libFuzzer harnesses, tests/fuzz/fuzz_X.c -> build/fuzz/fuzz_X: clang with the fuzzer's
# instrumentation, ASan and UBSan (any undefined behaviour stops the run); no MPI, no BLAS: a
# harness links only the file formats it feeds, their base and cJSON
FUZZ_CC    := clang
FUZZ_FLAGS := -std=c11 -D_GNU_SOURCE -Isrc -O1 -g -Wall -Wextra -fno-omit-frame-pointer \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZ_SRC   := src/base/base.c src/base/fileio.c src/io/safetensors.c src/io/shards.c src/config/config.c src/config/count.c \
              src/data/tokenizer.c src/data/bpe.c src/data/bpe_read.c src/data/dataset.c src/serve/api.c src/sim/cluster.c src/sim/load.c
FUZZERS    := $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_SECONDS ?= 600
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz_common.h $(FUZZ_SRC) $(wildcard src/*/*.h)
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) $< $(FUZZ_SRC) -o $@ -lcjson -lpcre2-8 -lutf8proc -lm

# each harness in turn, FUZZ_SECONDS each: the seeds of tests/fuzz/corpus/X are read, what the
# fuzzer finds goes to build/fuzz/corpus/X (kept between runs), a crash to build/fuzz/crash-*
fuzz:
	@bash scripts/deps.sh
	@$(MAKE) --no-print-directory $(FUZZERS)
	@for f in $(FUZZERS); do h=$$(basename $$f); mkdir -p build/fuzz/corpus/$$h; \
	  echo "== $$h, $(FUZZ_SECONDS) s"; \
	  $$f -max_total_time=$(FUZZ_SECONDS) -dict=tests/fuzz/json.dict -artifact_prefix=build/fuzz/ -print_final_stats=1 \
	    build/fuzz/corpus/$$h tests/fuzz/corpus/$$h || exit 1; done

test:
	@bash scripts/deps.sh
	@$(MAKE) --no-print-directory moe build/test_ops build/test_tok build/test_io build/test_pipe build/test_dist_groups build/asan/moe $(FUZZERS)
	@bash tests/run.sh

demo:
	@bash scripts/deps.sh build
	@$(MAKE) --no-print-directory moe
	@bash scripts/demo.sh

clean:
	rm -rf build moe
