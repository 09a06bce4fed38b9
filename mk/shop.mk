# mk/shop.mk - the shop example (examples/shop): an order -> stock -> payment
# saga whose participants consume RabbitMQ queues. Three programs, built
# into $(B)/examples/shop/: `order` (the client that places orders, and the
# service of the order's own steps), `stock` and `payment`. All of them share
# shop.c (topology, the participant service on libdtx's AMQP participant
# loop) and the bank example's database layer (examples/bank/db.c, linked
# from there, not copied). Included by Makefile.

SHOP_PKGS := librabbitmq libcurl jansson libpq sqlite3
SHOP_CFLAGS := -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -MMD -MP -Iinclude \
               $(shell pkg-config --cflags $(SHOP_PKGS))
SHOP_LIBS := $(shell pkg-config --libs $(SHOP_PKGS)) -lpthread
SHOP_BIN := $(B)/examples/shop/order $(B)/examples/shop/stock $(B)/examples/shop/payment

# More specific than the Makefile's $(B)/%.o rule: the examples build against
# the public header only.
$(B)/examples/shop/%.o: examples/shop/%.c
	@mkdir -p $(dir $@)
	$(CC) $(SHOP_CFLAGS) $(CFLAGS) -c $< -o $@

# db.o comes from mk/bank.mk's rule for examples/bank.
SHOP_COMMON := $(B)/examples/shop/shop.o $(B)/examples/bank/db.o

# $(LIBDTX_LIBS) (mk/libdtx.mk): what libdtx.a itself needs.
$(SHOP_BIN): $(B)/examples/shop/%: $(B)/examples/shop/%.o $(SHOP_COMMON) $(B)/libdtx.a
	$(CC) $(LDFLAGS) -o $@ $^ $(SHOP_LIBS) $(LIBDTX_LIBS)

shop: $(SHOP_BIN)

.PHONY: shop
EXTRA_ALL += $(SHOP_BIN)
