#!/usr/bin/env bash
# Data passes through foresight unchanged: direct and buffered I/O, two
# devices at once, flush, FUA, discard and write-zeroes.
. "$(dirname "$0")/../lib.sh"
ktap_begin "data identity"

ORIGIN=/dev/ram0
SIZE=$(sectors $ORIGIN)
W=/tmp/fs-data
mkdir -p $W

# same FILE DEV OFFSET_KIB: DEV holds FILE at OFFSET_KIB.
same() {
	cmp <(dd if="$2" bs=1k skip="$3" count=$(($(stat -c %s "$1") / 1024)) iflag=direct status=none) "$1"
}

direct_io() {
	pattern $W/a 2048 direct || return 1
	dm create fs0 --table "0 $SIZE foresight $ORIGIN" || return 1
	dd if=$W/a of=/dev/mapper/fs0 bs=64k seek=16 oflag=direct status=none || return 1
	same $W/a /dev/mapper/fs0 1024 || fail "read back through foresight differs"
	same $W/a $ORIGIN 1024 || fail "origin differs"
	# Unaligned-to-4K but sector-aligned I/O.
	pattern $W/b 7 odd || return 1
	dd if=$W/b of=/dev/mapper/fs0 bs=512 seek=12345 oflag=direct status=none || return 1
	cmp <(dd if=$ORIGIN bs=512 skip=12345 count=14 iflag=direct status=none) $W/b ||
		fail "sector-granular write differs"
	dm remove fs0
}
check "O_DIRECT writes read back identically through foresight and from the origin" direct_io

buffered_io() {
	pattern $W/c 3000 buffered || return 1
	dm create fs0 --table "0 $SIZE foresight $ORIGIN" || return 1
	dd if=$W/c of=/dev/mapper/fs0 bs=1M seek=8 conv=fsync status=none || return 1
	echo 3 >/proc/sys/vm/drop_caches
	cmp <(dd if=/dev/mapper/fs0 bs=1M skip=8 count=3 status=none | head -c $((3000 * 1024))) $W/c ||
		fail "buffered read back differs"
	same $W/c $ORIGIN 8192 || fail "origin differs"
	dm remove fs0
}
check "buffered writes read back identically through foresight and from the origin" buffered_io

two_devices() {
	pattern $W/d0 1024 dev0 && pattern $W/d1 1024 dev1 || return 1
	dm create fs0 --table "0 $SIZE foresight /dev/ram0" || return 1
	dm create fs1 --table "0 $(sectors /dev/ram1) foresight /dev/ram1" || return 1
	dd if=$W/d0 of=/dev/mapper/fs0 bs=64k oflag=direct status=none &
	dd if=$W/d1 of=/dev/mapper/fs1 bs=64k oflag=direct status=none &
	wait
	same $W/d0 /dev/ram0 0 || fail "fs0 data wrong"
	same $W/d1 /dev/ram1 0 || fail "fs1 data wrong"
	same $W/d0 /dev/mapper/fs0 0 && same $W/d1 /dev/mapper/fs1 0 || fail "read back wrong"
	dm remove fs1
	dm remove fs0
}
check "two devices at once keep their data apart" two_devices

# Field N of /sys/block/DEV/stat.
stat_field() { awk -v n="$2" '{print $n}' "/sys/block/${1#/dev/}/stat"; }

passthrough() {
	local nb before after
	nb=$(nullb nb_pass 64 memory_backed=1 discard=1 cache_size=16) || return 1
	dm create fs0 --table "0 $(sectors "$nb") foresight $nb" || return 1
	pattern $W/e 1024 pass || return 1
	dd if=$W/e of=/dev/mapper/fs0 bs=64k oflag=direct status=none || return 1
	# Flush: fsync of the dm device reaches the origin (stat field 16).
	before=$(stat_field "$nb" 16)
	dd if=/dev/zero of=/dev/mapper/fs0 bs=4k count=1 conv=fsync status=none || return 1
	after=$(stat_field "$nb" 16)
	[ "$after" -gt "$before" ] || fail "flush did not reach the origin ($before -> $after)"
	[ "$(dm status fs0 | awk '{print $10}')" -gt 0 ] || fail "no flush counted: $(dm status fs0)"
	# FUA: O_DSYNC writes complete (the dm device keeps the origin's fua).
	dd if=$W/e of=/dev/mapper/fs0 bs=64k count=1 oflag=direct,dsync status=none || return 1
	# Discard reaches the origin (stat field 12) and the range reads as zeroes.
	before=$(stat_field "$nb" 12)
	blkdiscard -o 0 -l 262144 /dev/mapper/fs0 || return 1
	after=$(stat_field "$nb" 12)
	[ "$after" -gt "$before" ] || fail "discard did not reach the origin"
	cmp <(dd if=$nb bs=4k count=64 iflag=direct status=none) <(head -c 262144 /dev/zero) ||
		fail "discarded range not zero on the origin"
	# Write-zeroes, where the origin has it.
	if [ "$(cat /sys/block/${nb#/dev/}/queue/write_zeroes_max_bytes)" != 0 ]; then
		blkdiscard -z -o 262144 -l 262144 /dev/mapper/fs0 || fail "write-zeroes failed"
		cmp <(dd if=$nb bs=4k skip=64 count=64 iflag=direct status=none) <(head -c 262144 /dev/zero) ||
			fail "write-zeroes range not zero"
	else
		blkdiscard -z -o 262144 -l 262144 /dev/mapper/fs0 || fail "zeroing fallback failed"
	fi
	cmp <(dd if=$nb bs=64k skip=8 count=8 iflag=direct status=none) <(tail -c +524289 $W/e) ||
		fail "data beyond the zeroed ranges changed"
	dm remove fs0
	nullb_remove nb_pass
}
check "flush, FUA, discard and write-zeroes pass through to the origin" passthrough

check "no kernel warnings" dmesg_clean
rm -rf $W
ktap_end
