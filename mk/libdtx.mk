# mk/libdtx.mk - libdtx (include/dtx.h, src/libdtx/*.c), its unit tests
# (tests/libdtx/test_*.c) and dtxctl (src/dtxctl/*.c). Included by Makefile.

LIBDTX_VERSION := 0.1.0
LIBDTX_SOVERSION := 0
LIBDTX_PKGS := libcurl jansson libpq sqlite3 librabbitmq libssl
LIBDTX_CFLAGS := -std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -MMD -MP -Iinclude -fPIC \
                 $(shell pkg-config --cflags $(LIBDTX_PKGS))
LIBDTX_LIBS := $(shell pkg-config --libs $(LIBDTX_PKGS))
LIBDTX_SRC := $(wildcard src/libdtx/*.c)
LIBDTX_OBJ := $(LIBDTX_SRC:%.c=$(B)/%.o)
LIBDTX_TEST_SRC := $(wildcard tests/libdtx/test_*.c)
LIBDTX_TEST_BIN := $(LIBDTX_TEST_SRC:tests/libdtx/%.c=$(B)/tests/libdtx/%)
DTXCTL_SRC := $(wildcard src/dtxctl/*.c)
DTXCTL_OBJ := $(DTXCTL_SRC:%.c=$(B)/%.o)

$(B)/src/libdtx/%.o: src/libdtx/%.c
	@mkdir -p $(dir $@)
	$(CC) $(LIBDTX_CFLAGS) -Isrc/libdtx -DLIBDTX_VERSION='"$(LIBDTX_VERSION)"' $(CFLAGS) -c $< -o $@

$(B)/src/dtxctl/%.o: src/dtxctl/%.c
	@mkdir -p $(dir $@)
	$(CC) $(LIBDTX_CFLAGS) $(CFLAGS) -c $< -o $@

$(B)/tests/libdtx/%.o: tests/libdtx/%.c
	@mkdir -p $(dir $@)
	$(CC) $(LIBDTX_CFLAGS) -Isrc/libdtx $(CFLAGS) -c $< -o $@

$(B)/libdtx.a: $(LIBDTX_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(B)/libdtx.so: $(LIBDTX_OBJ)
	$(CC) $(LDFLAGS) -shared -Wl,-soname,libdtx.so.$(LIBDTX_SOVERSION) -o $@ $^ $(LIBDTX_LIBS)

$(B)/tests/libdtx/%: $(B)/tests/libdtx/%.o $(B)/libdtx.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBDTX_LIBS) -lcmocka

$(B)/dtxctl: $(DTXCTL_OBJ) $(B)/libdtx.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBDTX_LIBS)

# Installation: `make install [PREFIX=/usr/local] [DESTDIR=...]` puts the
# header, both libraries (libdtx.so.$(LIBDTX_VERSION), with the soname link
# and the development link), libdtx.pc and dtxctl under $(DESTDIR)$(PREFIX).
# libdtx.pc is made from src/libdtx/libdtx.pc.in for the PREFIX given.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
INSTALL ?= install

$(B)/libdtx.pc: src/libdtx/libdtx.pc.in mk/libdtx.mk FORCE
	@mkdir -p $(dir $@)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(LIBDTX_VERSION)|g' \
	    -e 's|@REQUIRES@|$(LIBDTX_PKGS)|g' $< > $@.tmp
	@if cmp -s $@.tmp $@; then rm -f $@.tmp; else mv -f $@.tmp $@; fi

.PHONY: install install-libdtx FORCE
FORCE:

install: install-libdtx

install-libdtx: $(B)/libdtx.a $(B)/libdtx.so $(B)/libdtx.pc $(if $(DTXCTL_SRC),$(B)/dtxctl)
	$(INSTALL) -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) \
	    $(DESTDIR)$(BINDIR)
	$(INSTALL) -m 644 include/dtx.h $(DESTDIR)$(INCLUDEDIR)/dtx.h
	$(INSTALL) -m 644 $(B)/libdtx.a $(DESTDIR)$(LIBDIR)/libdtx.a
	$(INSTALL) -m 755 $(B)/libdtx.so $(DESTDIR)$(LIBDIR)/libdtx.so.$(LIBDTX_VERSION)
	ln -sf libdtx.so.$(LIBDTX_VERSION) $(DESTDIR)$(LIBDIR)/libdtx.so.$(LIBDTX_SOVERSION)
	ln -sf libdtx.so.$(LIBDTX_SOVERSION) $(DESTDIR)$(LIBDIR)/libdtx.so
	$(INSTALL) -m 644 $(B)/libdtx.pc $(DESTDIR)$(PKGCONFIGDIR)/libdtx.pc
	$(if $(DTXCTL_SRC),$(INSTALL) -m 755 $(B)/dtxctl $(DESTDIR)$(BINDIR)/dtxctl)

EXTRA_ALL += $(B)/libdtx.a $(B)/libdtx.so $(B)/libdtx.pc $(LIBDTX_TEST_BIN) $(if $(DTXCTL_SRC),$(B)/dtxctl)
EXTRA_UNIT_BIN += $(LIBDTX_TEST_BIN)
