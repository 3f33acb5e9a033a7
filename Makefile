# SPDX-License-Identifier: GPL-2.0
#
# dm-foresight.  On a fresh Debian 12 machine:
#   make demo    boot a guest, load the module, run a workload, show foresight
#   make test    host tests, then guest tests; ends with `N passed, N failed`
# Both install what they need.  Also:
#   make bench   foresight against dm-linear and null_blk, in one guest boot
#   make module  build dm-foresight.ko (KDIR=<Rust-enabled kernel build tree>
#                to build against your own kernel instead of the cached one)

LLVM ?= -19
KDIR ?=
# The module is linted with clippy (the kernel's own lint set) as it builds.
CLIPPY ?= 1
export LLVM

REPO := $(CURDIR)
# The kernel build tree: yours, or the cached guest kernel (built on demand).
kdir = $(if $(KDIR),$(KDIR),$$($(REPO)/qemu-test/kernel))

.PHONY: all setup kernel module tool host-test guest-test test demo bench clean

all: module

setup:
	@$(REPO)/qemu-test/setup-host

kernel: setup
	@$(if $(KDIR),true,$(REPO)/qemu-test/kernel >/dev/null)

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
	@$(REPO)/qemu-test/guest -- $(REPO)/qemu-test/demo

bench: module tool
	@GUEST_TIMEOUT=$${GUEST_TIMEOUT:-7200} $(REPO)/qemu-test/guest --icount --memory 3G -- $(REPO)/qemu-test/bench

clean:
	@[ -z "$(KDIR)" ] || $(MAKE) -C "$(KDIR)" M=$(REPO) clean
	@rm -f dm-foresight.ko dm-foresight.mod* modules.order Module.symvers
	@find rust -name '*.o' -o -name '.*.cmd' -o -name '*.d' | xargs rm -f
	@rm -f rust/dm/bindings_generated.rs
	@rm -rf qemu-test/out
