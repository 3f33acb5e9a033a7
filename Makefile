# SPDX-License-Identifier: GPL-2.0
#
# dm-foresight.  On a fresh Debian 12 machine:
#   make demo    boot a guest, load the module, run a workload, show foresight
#   make test    host tests, then guest tests; ends with `N passed, N failed`
# Both install what they need.  Also:
#   make bench   foresight against dm-linear and null_blk, in one guest boot,
#                on a lean kernel (no debug options)
#   make profile guest instructions per write on dm-linear and foresight, by
#                function (a QEMU plugin; the lean kernel)
#   make test-kasan  the guest tests on the test kernel plus KASAN (slow;
#                outside CI); TESTS="qemu-test/tests/NN-x.sh ..." runs
#                those scripts only (the harness checks still run)
#   make module  build dm-foresight.ko (KDIR=<Rust-enabled kernel build tree>
#                to build against your own kernel instead of the cached one)
#   make install the tool, the admin guides, the daemon's systemd unit, and
#                the module's sources for DKMS (built and installed for the
#                running kernel if dkms is there); PREFIX, DESTDIR as usual
#
# The cached kernels (qemu-test/kernel): `debug` for make test and make demo
# (lockdep, atomic-sleep, lockup, stall and hung-task detectors, kmemleak),
# `lean` for make bench, `kasan` for make test-kasan; each is built on first
# use.

LLVM ?= -19
KDIR ?=
# The module is linted with clippy (the kernel's own lint set) as it builds.
CLIPPY ?= 1
export LLVM

REPO := $(CURDIR)
# The kernel build tree: yours, or the cached test kernel (built on demand).
kdir = $(if $(KDIR),$(KDIR),$$($(REPO)/qemu-test/kernel debug))

# $(call flavour-module,FLAVOUR): dm-foresight.ko built against the cached
# FLAVOUR kernel from a copy of the sources in qemu-test/out/FLAVOUR/src
# (a build tree serves one kernel at a time).  Clippy already ran on the
# main build.
flavour-src = $(REPO)/qemu-test/out/$(1)/src
define flavour-module
	@mkdir -p $(call flavour-src,$(1))
	@cd $(REPO) && git ls-files --cached --others --exclude-standard -- Kbuild rust | \
		rsync -a --files-from=- $(REPO)/ $(call flavour-src,$(1))/
	@$(MAKE) -C "$$($(REPO)/qemu-test/kernel $(1))" M=$(call flavour-src,$(1)) LLVM=$(LLVM) CLIPPY=0 modules
endef

.PHONY: all setup kernel module tool host-test guest-test test test-kasan demo bench profile clean \
	install dkms-module

all: module

setup:
	@$(REPO)/qemu-test/setup-host

kernel: setup
	@$(if $(KDIR),true,$(REPO)/qemu-test/kernel debug >/dev/null)

module: kernel
	@$(MAKE) -C "$(kdir)" M=$(REPO) LLVM=$(LLVM) CLIPPY=$(CLIPPY) modules

# The userspace helper, `foresight` (userspace-tool/target/release/).
tool: setup
	@cd $(REPO)/userspace-tool && cargo build --release --bin foresight

host-test: setup
	@$(REPO)/qemu-test/test-all --host-only

guest-test: module
	@$(REPO)/qemu-test/test-all --guest-only

test: module
	@$(REPO)/qemu-test/test-all

demo: module tool
	@$(REPO)/qemu-test/guest --rwdir $(REPO)/qemu-test/out -- $(REPO)/qemu-test/demo

bench: setup tool
	@$(REPO)/qemu-test/eval-traces $(REPO)/userspace-tool/target/release/foresight
	$(call flavour-module,lean)
	@KDIR=$$($(REPO)/qemu-test/kernel lean) FORESIGHT_KO=$(call flavour-src,lean)/dm-foresight.ko \
		GUEST_TIMEOUT=$${GUEST_TIMEOUT:-7200} $(REPO)/qemu-test/guest --icount --memory 3G -- $(REPO)/qemu-test/bench

profile: setup
	$(call flavour-module,lean)
	@KDIR=$$($(REPO)/qemu-test/kernel lean) FORESIGHT_KO=$(call flavour-src,lean)/dm-foresight.ko \
		$(REPO)/qemu-test/profile/run

# The guest tests on the KASAN kernel (outside CI: its build and run are slow).
# no5lvl: with 5-level paging (TCG's CPU offers it) KASAN reports a wild
# access in an interrupt taken while the boot CPU is identified, which uses
# up its one report and turns lockdep off; kasan_multi_shot: every bug is
# reported, not only the first.
test-kasan: setup tool
	$(call flavour-module,kasan)
	@KDIR=$$($(REPO)/qemu-test/kernel kasan) FORESIGHT_KO=$(call flavour-src,kasan)/dm-foresight.ko \
		GUEST_APPEND="no5lvl kasan_multi_shot" GUEST_TIMEOUT=$${GUEST_TIMEOUT:-14400} \
		$(REPO)/qemu-test/test-all --guest-only $(TESTS)

# --- Installing on a host (see README, "On a host").
VERSION := $(shell sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' $(REPO)/dkms.conf)
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR = $(PREFIX)/bin
DOCDIR = $(PREFIX)/share/doc/dm-foresight
UNITDIR ?= $(PREFIX)/lib/systemd/system
SRCDIR = /usr/src/dm-foresight-$(VERSION)

install:
	@cd $(REPO)/userspace-tool && cargo build --release --bin foresight
	install -D -m 755 $(REPO)/userspace-tool/target/release/foresight $(DESTDIR)$(BINDIR)/foresight
	install -d $(DESTDIR)$(DOCDIR)
	install -m 644 $(REPO)/Documentation/admin-guide/device-mapper/*.rst \
		$(REPO)/Documentation/netlink/specs/foresight.yaml $(DESTDIR)$(DOCDIR)/
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@DOCDIR@|$(DOCDIR)|g' \
		$(REPO)/userspace-tool/systemd/foresight-daemon@.service >$(DESTDIR)$(UNITDIR)/foresight-daemon@.service
	install -d $(DESTDIR)$(SRCDIR)
	cd $(REPO) && git ls-files --cached --others --exclude-standard -- Kbuild Makefile dkms.conf rust | \
		rsync -a --files-from=- $(REPO)/ $(DESTDIR)$(SRCDIR)/
	@if [ -z "$(DESTDIR)" ] && command -v dkms >/dev/null; then \
		dkms install -m dm-foresight -v $(VERSION); \
	else \
		echo "module sources in $(DESTDIR)$(SRCDIR): dkms install -m dm-foresight -v $(VERSION)"; \
	fi

# What dkms runs (dkms.conf): the module against KDIR, with the toolchain
# the kernel was built with (LLVM=-N for a kernel built by clang N, if
# clang-N is installed; else the unversioned LLVM), without clippy.  dkms
# adds CC=clang LD=ld.lld for a clang-built kernel, which would name the
# unversioned tools: the versioned ones are given again.
kernel_clang = $(shell sed -n 's/^CONFIG_CLANG_VERSION=\([1-9][0-9]*\)[0-9]\{4\}$$/\1/p' $(KDIR)/.config 2>/dev/null)
kernel_llvm = $(if $(kernel_clang),$(if $(shell command -v clang-$(kernel_clang)),-$(kernel_clang),1))
kernel_tools = $(if $(kernel_clang),CC=clang$(filter -%,$(kernel_llvm)) LD=ld.lld$(filter -%,$(kernel_llvm)))
dkms-module:
	@[ -n "$(KDIR)" ] || { echo "dkms-module: give KDIR" >&2; exit 1; }
	$(MAKE) -C "$(KDIR)" M=$(REPO) LLVM=$(kernel_llvm) $(kernel_tools) CLIPPY=0 modules

clean:
	@[ -z "$(KDIR)" ] || $(MAKE) -C "$(KDIR)" M=$(REPO) clean
	@rm -f dm-foresight.ko dm-foresight.mod* modules.order Module.symvers
	@find rust -name '*.o' -o -name '.*.cmd' -o -name '*.d' | xargs rm -f
	@rm -f rust/dm/bindings_generated.rs
	@rm -rf qemu-test/out
