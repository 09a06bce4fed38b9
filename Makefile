# dtx build. Plain make: every .c under a module directory is picked up, so a
# new file needs no edit here. `make` checks formatting, builds dtxd, the unit
# tests and the benchmark tools; `make test` runs unit and integration tests.

CC      ?= cc
PKGS    := libuv libmicrohttpd libcurl jansson zlib libpq librabbitmq libssl rdkafka
# CFLAGS/LDFLAGS are the caller's (optimisation, sanitizers: see `make asan`);
# the flags the project needs are kept apart so overriding CFLAGS keeps them.
CFLAGS  ?= -O2 -g
DTX_CFLAGS := -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -MMD -MP -Isrc \
              $(shell pkg-config --cflags $(PKGS))
LDLIBS  += $(shell pkg-config --libs $(PKGS)) -lpthread -lm
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer
B       := build

MODULES := common engine store transport api
CORE_SRC := $(foreach m,$(MODULES),$(wildcard src/$(m)/*.c))
CORE_OBJ := $(CORE_SRC:%.c=$(B)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
BENCH_BIN := $(B)/bench/loadgen $(B)/bench/participant
FMT_SRC := $(shell find src tests bench include examples -name '*.[ch]' 2>/dev/null)

# Parts beyond the coordinator (libdtx, dtxctl, examples) each describe their
# build in mk/*.mk: they add programs to EXTRA_ALL and unit-test binaries to
# EXTRA_UNIT_BIN.
.DEFAULT_GOAL := all
EXTRA_ALL :=
EXTRA_UNIT_BIN :=
-include mk/*.mk

.PHONY: all dtxd unit test test-unit test-integration bench format format-check clean asan tsan

all: format-check $(B)/dtxd $(UNIT_BIN) $(BENCH_BIN) $(EXTRA_ALL)

dtxd: $(B)/dtxd

$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(DTX_CFLAGS) $(CFLAGS) -c $< -o $@

$(B)/libdtxcore.a: $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/dtxd: $(B)/src/dtxd/main.o $(B)/libdtxcore.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(B)/tests/%: $(B)/tests/unit/%.o $(B)/libdtxcore.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(B)/bench/%: $(B)/bench/%.o $(B)/libdtxcore.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

unit: $(UNIT_BIN)

test-unit: $(UNIT_BIN) $(EXTRA_UNIT_BIN)
	@set -e; for t in $(UNIT_BIN) $(EXTRA_UNIT_BIN); do echo "== $$t"; $$t; done

# The integration tests find dtxctl, the live libdtx test, the bank
# example and the mock Kafka cluster next to $DTXD.
INTEGRATION_ENV = DTXD=$(CURDIR)/$(1)/dtxd DTXCTL=$(CURDIR)/$(1)/dtxctl \
	DTX_CLIENT_LIVE=$(CURDIR)/$(1)/tests/libdtx/test_client_live \
	KAFKA_MOCK=$(CURDIR)/$(1)/tests/tools/kafka_mock

# Three pytest workers (python3-pytest-xdist): the tests mostly wait on
# processes, brokers and timers. Modules that share databases carry an
# xdist_group and take turns on one worker. PYTEST_PAR= runs them in order.
PYTEST_PAR ?= -n 3 --dist loadgroup

test-integration: $(B)/dtxd $(EXTRA_ALL)
	$(call INTEGRATION_ENV,$(B)) /usr/bin/python3 -m pytest -q $(PYTEST_PAR) tests/integration

test: all test-unit test-integration

bench: $(B)/dtxd $(BENCH_BIN)
	BUILD=$(B) bench/run.sh

# The unit and integration suites against an AddressSanitizer +
# UndefinedBehaviorSanitizer build, in build-asan/. The tests marked slow
# (their own broker or database restarted, the chaos schedule) run in the
# normal pass only, to keep the default run within its time.
asan:
	$(MAKE) B=build-asan CFLAGS="$(SAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" \
		build-asan/dtxd $(UNIT_BIN:$(B)/%=build-asan/%) $(EXTRA_ALL:$(B)/%=build-asan/%)
	@set -e; for t in $(UNIT_BIN:$(B)/%=build-asan/%) $(EXTRA_UNIT_BIN:$(B)/%=build-asan/%); do \
		echo "== $$t"; $$t; done
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		$(call INTEGRATION_ENV,build-asan) /usr/bin/python3 -m pytest -q $(PYTEST_PAR) -m "not slow" \
		tests/integration

# ThreadSanitizer over the parts that run threads of their own, in
# build-tsan/: the log writer (test_wal, and through dtxd the recovery and
# compaction tests) and the RabbitMQ connection thread (test_amqp_commands.py,
# every mode over AMQP). A race stops the process (halt_on_error), which
# fails its test.
TSAN_FLAGS := -O1 -g -fsanitize=thread
TSAN_UNIT := $(B)/tests/test_wal $(B)/tests/test_amqp
TSAN_INTEGRATION := tests/integration/test_recovery.py tests/integration/test_amqp_commands.py
tsan:
	$(MAKE) B=build-tsan CFLAGS="$(TSAN_FLAGS)" LDFLAGS="-fsanitize=thread" \
		build-tsan/dtxd $(TSAN_UNIT:$(B)/%=build-tsan/%)
	@set -e; for t in $(TSAN_UNIT:$(B)/%=build-tsan/%); do \
		echo "== $$t"; TSAN_OPTIONS=halt_on_error=1 $$t; done
	TSAN_OPTIONS=halt_on_error=1 DTXD=$(CURDIR)/build-tsan/dtxd \
		/usr/bin/python3 -m pytest -q -p no:cacheprovider $(PYTEST_PAR) -m "not slow" \
		$(TSAN_INTEGRATION)

format:
	clang-format -i $(FMT_SRC)

format-check:
	@clang-format --dry-run -Werror $(FMT_SRC)

# make install (mk/libdtx.mk adds libdtx and dtxctl): PREFIX, DESTDIR honoured.
.PHONY: install install-dtxd
install: install-dtxd
install-dtxd: $(B)/dtxd
	$(INSTALL) -d $(DESTDIR)$(BINDIR)
	$(INSTALL) -m 755 $(B)/dtxd $(DESTDIR)$(BINDIR)/dtxd

clean:
	rm -rf $(B)

-include $(shell find $(B) -name '*.d' 2>/dev/null)
