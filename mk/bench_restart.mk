# bench_restart.mk - `make bench-restart`: builds dtxd and the load
# generator, then runs bench/restart.sh (DESIGN.md section 7: back to
# serving within 2 s with 1,000,000 live transactions in the log).

.PHONY: bench-restart
bench-restart: $(B)/dtxd $(B)/bench/loadgen
	BUILD=$(B) bench/restart.sh
