# mk/kafka.mk - tests/tools/kafka_mock: librdkafka's mock Kafka cluster in a
# process of its own, for tests/integration/test_kafka.py (which finds it
# through $KAFKA_MOCK). Included by Makefile.

KAFKA_MOCK_BIN := $(B)/tests/tools/kafka_mock

# More specific than the Makefile's $(B)/tests/% rule (unit tests).
$(B)/tests/tools/kafka_mock: tests/tools/kafka_mock.c
	@mkdir -p $(dir $@)
	$(CC) $(DTX_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(shell pkg-config --libs rdkafka)

EXTRA_ALL += $(KAFKA_MOCK_BIN)
