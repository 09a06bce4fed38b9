# mk/crash.mk - the crash-point build and sweep (src/common/crash.h,
# tests/integration/test_crash_points.py, docs/RELIABILITY.md). Included by
# Makefile.
#
#   make crash             dtxd with -DDTX_CRASH_POINTS in build-crash/
#   make test-crash        the default sweep: every point at hits 1-3
#                          (DTX_CRASH_HITS overrides, e.g. DTX_CRASH_HITS=1)
#   make test-crash-sweep  the same, with DTX_REQUIRE_CRASH=1 (fails, rather
#                          than skips, without the crash build)
#
# The sweep finds the crash build through $DTXD_CRASH; `make test-integration`
# passes it when INTEGRATION_ENV names it, else the sweep is skipped there.

CRASH_B      := build-crash
CRASH_CFLAGS := -O1 -g -DDTX_CRASH_POINTS

.PHONY: crash test-crash test-crash-sweep

crash:
	$(MAKE) B=$(CRASH_B) CFLAGS="$(CRASH_CFLAGS)" $(CRASH_B)/dtxd

test-crash: crash
	DTXD_CRASH=$(CURDIR)/$(CRASH_B)/dtxd /usr/bin/python3 -m pytest -q \
		tests/integration/test_crash_points.py

test-crash-sweep: crash
	DTX_REQUIRE_CRASH=1 DTXD_CRASH=$(CURDIR)/$(CRASH_B)/dtxd /usr/bin/python3 -m pytest -q \
		tests/integration/test_crash_points.py

.PHONY: clean-crash
clean-crash:
	rm -rf $(CRASH_B)
