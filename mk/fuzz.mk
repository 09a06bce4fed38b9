# mk/fuzz.mk - libFuzzer targets (tests/fuzz/fuzz_*.c, docs/RELIABILITY.md
# "Fuzzing"). They are built with clang in build-fuzz/: the core objects with
# -fsanitize=fuzzer-no-link,address,undefined, each target linked with
# -fsanitize=fuzzer,address,undefined. Not part of `make` (which uses $(CC)).
#
#   make fuzz-smoke                each target on its seed corpus, then
#                                  FUZZ_SMOKE_SECONDS (20) of fuzzing; fails
#                                  on any crash, leak, UB or timeout
#   make fuzz [FUZZ_SECONDS=600]   each target FUZZ_SECONDS, one after another
#   make fuzz-build                build the targets only
#
# Seeds are in tests/fuzz/corpus/<target>/ and are only read: what the fuzzer
# finds goes to build-fuzz/corpus/<target>/ (kept between `make fuzz` runs, a
# fresh one for each smoke run), crashing inputs to build-fuzz/artifacts/.
# Included by Makefile.

FUZZ_B := build-fuzz
FUZZ_CC ?= clang
FUZZ_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
               -fno-sanitize-recover=undefined
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BIN := $(FUZZ_TARGETS:%=$(FUZZ_B)/tests/fuzz/%)
FUZZ_SECONDS ?= 600
FUZZ_SMOKE_SECONDS ?= 20
# libFuzzer options for every run; a target's dictionary is added when
# tests/fuzz/<target>.dict exists.
FUZZ_OPTS := -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
FUZZ_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1

# The link, in the sub-make of fuzz-build (B is $(FUZZ_B), CC clang, CFLAGS
# $(FUZZ_CFLAGS)), where the Makefile's rules make the objects and
# libdtxcore.a. A static pattern rule: it wins over $(B)/tests/% (unit tests).
ifeq ($(B),$(FUZZ_B))
$(FUZZ_BIN): $(FUZZ_B)/tests/fuzz/%: $(FUZZ_B)/tests/fuzz/%.o $(FUZZ_B)/libdtxcore.a
	$(CC) $(CFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) -o $@ $^ $(LDLIBS)
endif

.PHONY: fuzz fuzz-build fuzz-smoke

fuzz-build:
	@$(MAKE) -s --no-print-directory B=$(FUZZ_B) CC=$(FUZZ_CC) CFLAGS="$(FUZZ_CFLAGS)" $(FUZZ_BIN)

# $(call fuzz_run,target,seconds,scratch corpus dir)
fuzz_run = mkdir -p $(3) $(FUZZ_B)/artifacts && \
	echo "== fuzz $(1): $(2) s" && \
	$(FUZZ_ENV) $(FUZZ_B)/tests/fuzz/$(1) $(FUZZ_OPTS) -max_total_time=$(2) \
	    -artifact_prefix=$(FUZZ_B)/artifacts/$(1)- \
	    $$(test -f tests/fuzz/$(1).dict && echo -dict=tests/fuzz/$(1).dict) \
	    $(3) tests/fuzz/corpus/$(1)

fuzz-smoke: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	    rm -rf $(FUZZ_B)/smoke/$$t; \
	    $(call fuzz_run,$$t,$(FUZZ_SMOKE_SECONDS),$(FUZZ_B)/smoke/$$t) 2>$(FUZZ_B)/smoke-$$t.log || \
	    { tail -n 60 $(FUZZ_B)/smoke-$$t.log; echo "fuzz-smoke: $$t FAILED" \
	      "(log: $(FUZZ_B)/smoke-$$t.log, input: $(FUZZ_B)/artifacts/)" >&2; exit 1; }; \
	    grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' $(FUZZ_B)/smoke-$$t.log; \
	done

fuzz: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
	    $(call fuzz_run,$$t,$(FUZZ_SECONDS),$(FUZZ_B)/corpus/$$t); \
	done
