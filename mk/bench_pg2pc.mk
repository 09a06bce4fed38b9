# mk/bench_pg2pc.mk - the 2pc-on-PostgreSQL benchmark: bench/pg2pc (a client
# of libdtx and libpq, so not the Makefile's $(B)/bench/% rule, which links
# libdtxcore) and `make bench-pg2pc`, which builds dtxd and it, then runs
# bench/pg2pc.sh (docs/BENCHMARKS.md). Included by Makefile.

PG2PC_PKGS := libpq libcurl jansson sqlite3
PG2PC_CFLAGS := -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -MMD -MP -Iinclude \
                $(shell pkg-config --cflags $(PG2PC_PKGS))
# linked like any libdtx program (its client pulls in the AMQP Try: rabbitmq-c, OpenSSL)
PG2PC_LIBS = $(LIBDTX_LIBS) -lpthread

# Explicit rules: they win over the Makefile's pattern rules for these files.
$(B)/bench/pg2pc.o: bench/pg2pc.c
	@mkdir -p $(dir $@)
	$(CC) $(PG2PC_CFLAGS) $(CFLAGS) -c $< -o $@

$(B)/bench/pg2pc: $(B)/bench/pg2pc.o $(B)/libdtx.a
	$(CC) $(LDFLAGS) -o $@ $^ $(PG2PC_LIBS)

.PHONY: bench-pg2pc
bench-pg2pc: $(B)/dtxd $(B)/bench/pg2pc
	BUILD=$(B) bench/pg2pc.sh

EXTRA_ALL += $(B)/bench/pg2pc
