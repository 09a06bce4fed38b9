# mk/bank.mk - the bank example (examples/bank): the account service `bank`
# (bank.c HTTP, bank_amqp.c RabbitMQ, routes.c the operations, ledger.c
# accounts and barrier, db.c PostgreSQL/SQLite) and the transfer client
# `transfer`, both on libdtx. Included by Makefile.

BANK_PKGS := libmicrohttpd libcurl jansson libpq sqlite3 librabbitmq libssl
BANK_CFLAGS := -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -MMD -MP -Iinclude \
               $(shell pkg-config --cflags $(BANK_PKGS))
BANK_LIBS := $(shell pkg-config --libs $(BANK_PKGS)) -lpthread
BANK_BIN := $(B)/examples/bank/bank $(B)/examples/bank/transfer

# More specific than the Makefile's $(B)/%.o rule: the examples build against
# the public header only.
$(B)/examples/bank/%.o: examples/bank/%.c
	@mkdir -p $(dir $@)
	$(CC) $(BANK_CFLAGS) $(CFLAGS) -c $< -o $@

BANK_OBJ := $(B)/examples/bank/bank.o $(B)/examples/bank/bank_amqp.o $(B)/examples/bank/routes.o \
            $(B)/examples/bank/ledger.o $(B)/examples/bank/db.o

$(B)/examples/bank/bank: $(BANK_OBJ) $(B)/libdtx.a
	$(CC) $(LDFLAGS) -o $@ $^ $(BANK_LIBS)

$(B)/examples/bank/transfer: $(B)/examples/bank/transfer.o $(B)/libdtx.a
	$(CC) $(LDFLAGS) -o $@ $^ $(BANK_LIBS)

bank: $(BANK_BIN)

.PHONY: bank
EXTRA_ALL += $(BANK_BIN)
