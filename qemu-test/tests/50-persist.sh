#!/usr/bin/env bash
# The dirty log across table reloads and module reloads, through a metadata
# device; unclean stops and damaged metadata are reported, never an empty log.
. "$(dirname "$0")/../lib.sh"
ktap_begin "dirty log persistence"

ORIGIN=/dev/ram0
META=/dev/ram1
SIZE=$(sectors $ORIGIN)
W=/tmp/fs-persist
mkdir -p $W
TABLE="0 $SIZE foresight $ORIGIN 0 6 metadata_dev $META level 100 adaptive 0"

blank_meta() { dd if=/dev/zero of=$META bs=1M count=4 oflag=direct status=none; }
write_some() { # count seed
	local i
	for i in $(seq 1 "$1"); do
		dd if=/dev/zero of=/dev/mapper/fs0 bs=4k seek=$(((i * 7919 + $2 * 104729) % (SIZE / 8))) count=1 \
			oflag=direct status=none
	done
}

# A log with two epochs of writes: $W/cur.0 and $W/prev.0 hold its extents.
populate() {
	blank_meta
	dm create fs0 --table "$TABLE" || return 1
	[ "$(st fs0 13)" = incomplete ] || fail "a new log's first epoch: $(st fs0 13)"
	dm message fs0 0 dirty rotate >/dev/null
	write_some 40 1
	dm message fs0 0 dirty rotate >/dev/null
	write_some 25 2
	extents fs0 cur $W/cur.0
	extents fs0 prev $W/prev.0
	[ "$(wc -l <$W/cur.0)" -gt 1 ] && [ "$(wc -l <$W/prev.0)" -gt 1 ] || fail "nothing logged"
}

same_log() {
	extents fs0 cur $W/cur.1
	extents fs0 prev $W/prev.1
	cmp $W/cur.0 $W/cur.1 || fail "current epoch changed: $(head -3 $W/cur.1)"
	cmp $W/prev.0 $W/prev.1 || fail "previous epoch changed: $(head -3 $W/prev.1)"
}

table_reload() {
	populate || return 1
	dm reload fs0 --table "$TABLE" || return 1
	dm resume fs0 || return 1
	same_log || return 1
	[ "$(st fs0 12) $(st fs0 13) $(st fs0 14)" = "2 tracked tracked" ] ||
		fail "epoch/states after reload: $(st fs0 12) $(st fs0 13) $(st fs0 14)"
	# Writes after the reload land in the restored epoch.
	write_some 5 3
	extents fs0 cur $W/cur.2
	[ "$(wc -l <$W/cur.2)" -ge "$(wc -l <$W/cur.0)" ] || fail "new writes lost"
	dm remove fs0
}
check "a table reload keeps the dirty log" table_reload
# The log of a device this size is flat: the bitmap of the current epoch is
# folded and saved at suspend (the tests above); buffered_log: the buffers
# are drained and saved.
TABLE="0 $SIZE foresight $ORIGIN 1 buffered_log 6 metadata_dev $META level 100 adaptive 0"
check "buffered_log: a table reload keeps the dirty log" table_reload
TABLE="0 $SIZE foresight $ORIGIN 0 6 metadata_dev $META level 100 adaptive 0"

module_reload() {
	populate || return 1
	dm remove fs0 || return 1
	rmmod dm_foresight || return 1
	insmod "$FORESIGHT_KO" || return 1
	dm create fs0 --table "$TABLE" || return 1
	same_log || return 1
	[ "$(st fs0 12)" = 2 ] || fail "epoch after module reload: $(st fs0 12)"
	dm remove fs0
}
check "a module reload keeps the dirty log (metadata device)" module_reload

unclean() {
	local loop
	populate || return 1
	# A copy of the metadata taken while the device is live is what a crash leaves.
	dd if=$META of=$W/crash.img bs=1M count=4 iflag=direct status=none
	dm remove fs0
	loop=$(losetup -f --show $W/crash.img) || return 1
	dm create fs0 --table "0 $SIZE foresight $ORIGIN 0 4 metadata_dev $loop level 100" || return 1
	[ "$(st fs0 13) $(st fs0 14)" = "inconsistent inconsistent" ] ||
		fail "after an unclean stop: $(st fs0 13) $(st fs0 14)"
	extents fs0 prev $W/p
	head -1 $W/p | grep -q inconsistent || fail "extents header: $(head -1 $W/p)"
	dmesg | grep -q 'unclean stop' || fail "no log line"
	# One rotation later the current epoch is whole again; the previous is not.
	dm message fs0 0 dirty rotate >/dev/null
	[ "$(st fs0 13) $(st fs0 14)" = "tracked inconsistent" ] || fail "$(st fs0 13) $(st fs0 14)"
	dm remove fs0
	losetup -d "$loop"
}
check "a log that was not saved loads as inconsistent (full copy), never empty" unclean

corrupt() {
	local loop
	populate || return 1
	dm remove fs0 || return 1
	dd if=$META of=$W/bad.img bs=1M count=4 iflag=direct status=none
	printf '\xff' | dd of=$W/bad.img bs=1 seek=20 conv=notrunc status=none
	loop=$(losetup -f --show $W/bad.img) || return 1
	dm create fs0 --table "0 $SIZE foresight $ORIGIN 0 2 metadata_dev $loop" || return 1
	[ "$(st fs0 13)" = inconsistent ] || fail "corrupt metadata: $(st fs0 13)"
	dm remove fs0
	losetup -d "$loop"
}
check "damaged metadata loads as inconsistent" corrupt

# reseal IMAGE OFFSET FORMAT VALUE...: writes struct-packed VALUEs at OFFSET of
# the superblock in IMAGE and fixes its checksum (CRC-32C of bytes 0..60):
# metadata a checksum cannot tell from good.
reseal() {
	python3 - "$@" <<'PY'
import struct, sys
path, off, fmt, *vals = sys.argv[1:]
with open(path, "r+b") as f:
    sb = bytearray(f.read(64))
    struct.pack_into(fmt, sb, int(off), *(int(v, 0) for v in vals))
    crc = 0xFFFFFFFF
    for b in sb[:60]:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    struct.pack_into("<I", sb, 60, crc ^ 0xFFFFFFFF)
    f.seek(0)
    f.write(sb)
PY
}

resealed() {
	local loop case off fmt val why
	populate || return 1
	dm remove fs0 || return 1
	dd if=$META of=$W/good.img bs=1M count=4 iflag=direct status=none
	for case in "24 <Q 0xffffffffffffffff epoch number out of range" \
		"40 <Q 0x10000000000 saved sets do not fit the metadata device" \
		"32 <B 200 payload is corrupt|metadata is corrupt" \
		"16 <Q 7 metadata is for a device of another size"; do
		read -r off fmt val why <<<"$case"
		cp $W/good.img $W/bad.img
		reseal $W/bad.img "$off" "$fmt" "$val" || return 1
		loop=$(losetup -f --show $W/bad.img) || return 1
		dmesg_mark
		dm create fs0 --table "0 $SIZE foresight $ORIGIN 0 2 metadata_dev $loop" ||
			{ losetup -d "$loop"; fail "$why: the device did not come up"; continue; }
		[ "$(st fs0 13) $(st fs0 14)" = "inconsistent inconsistent" ] ||
			fail "$why: states $(st fs0 13) $(st fs0 14)"
		dmesg_since | grep -Eq "dirty log ($why)" || fail "$why: reason not given: $(dmesg_since | tail -2)"
		# The log goes on: rotating past a loaded epoch number is safe.
		dm message fs0 0 dirty rotate >/dev/null || fail "$why: rotate"
		dm remove fs0
		losetup -d "$loop"
	done
}
check "metadata with a valid checksum but fields that do not fit the device loads as inconsistent, with the reason" resealed

too_small() {
	local loop
	head -c 2048 /dev/zero >$W/tiny.img
	loop=$(losetup -f --show $W/tiny.img) || return 1
	dmesg_mark
	! dm create fs0 --table "0 $SIZE foresight $ORIGIN 0 2 metadata_dev $loop" 2>/dev/null ||
		{ dm remove fs0; fail "accepted a 2 KiB metadata device"; }
	dmesg_since | grep -q "Metadata device too small" || fail "no reason given"
	losetup -d "$loop"
}
check "a metadata device too small is refused" too_small

check "no kernel warnings" dmesg_clean
rm -rf $W
ktap_end
