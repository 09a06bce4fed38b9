# mk/powerloss.mk - the power-loss and I/O-error test of the log
# (tests/unit/test_powerloss.c on the simulated disk tests/unit/simdisk.c).
# `make test-unit` runs it as any unit test (5,000 crash states, a few
# seconds); `make test-powerloss` is the long run: POWERLOSS_STATES crash
# states and POWERLOSS_IO_RUNS workloads with a fault at every call.
# DTX_POWERLOSS_SEED picks the first seed. Included by Makefile.

POWERLOSS_STATES ?= 100000
POWERLOSS_IO_RUNS ?= 20

# A unit test (the Makefile's $(B)/tests/% rule) that also links the simulated disk.
$(B)/tests/test_powerloss: $(B)/tests/unit/simdisk.o

test-powerloss: $(B)/tests/test_powerloss
	DTX_POWERLOSS_STATES=$(POWERLOSS_STATES) DTX_POWERLOSS_IO_RUNS=$(POWERLOSS_IO_RUNS) \
		$(B)/tests/test_powerloss

.PHONY: test-powerloss
