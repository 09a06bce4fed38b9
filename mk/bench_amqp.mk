# mk/bench_amqp.mk - the RabbitMQ benchmark: bench/amqp_confirm (the
# baseline: rabbitmq-c publishing with pipelined publisher confirms; built by
# the Makefile's $(B)/bench/% rule, which links libdtxcore and librabbitmq)
# and `make bench-amqp`, which builds dtxd, loadgen and it, then runs
# bench/amqp.sh (docs/BENCHMARKS.md). Included by Makefile.

.PHONY: bench-amqp
bench-amqp: $(B)/dtxd $(B)/bench/loadgen $(B)/bench/amqp_confirm
	BUILD=$(B) bench/amqp.sh

EXTRA_ALL += $(B)/bench/amqp_confirm
