# mk/chaos.mk - the long chaos bank run (tests/integration/test_chaos.py;
# the short one is part of the default integration tests). It needs
# PostgreSQL and RabbitMQ installed (the test starts a cluster and a node of
# its own) and took 24 minutes on the 2-core test machine. Override
# DTX_CHAOS_TRANSFERS, DTX_CHAOS_WORKERS or DTX_CHAOS_SEED on the command line.

DTX_CHAOS_TRANSFERS ?= 100000
DTX_CHAOS_WORKERS ?= 8

.PHONY: test-chaos-long
test-chaos-long: $(B)/dtxd $(EXTRA_ALL)
	DTX_CHAOS_TRANSFERS=$(DTX_CHAOS_TRANSFERS) DTX_CHAOS_WORKERS=$(DTX_CHAOS_WORKERS) \
		DTX_CHAOS_SECONDS=0 DTX_REQUIRE_PG=1 DTX_CHAOS_AMQP=1 DTX_REQUIRE_AMQP=1 \
		$(call INTEGRATION_ENV,$(B)) \
		/usr/bin/python3 -m pytest -q -s -p no:cacheprovider tests/integration/test_chaos.py
