#!/usr/bin/env bash
# The foresight target: create/remove, table and status, messages, every
# malformed table line, limits, module reference counting.
. "$(dirname "$0")/../lib.sh"
ktap_begin "foresight target"

ORIGIN=/dev/ram0
SIZE=$(sectors $ORIGIN)

create_remove() {
	dm create fs0 --table "0 $SIZE foresight $ORIGIN" || return 1
	[ -b /dev/mapper/fs0 ] || fail "no /dev/mapper/fs0"
	dm info fs0 | grep -q ACTIVE || fail "not active"
	[ "$(sectors /dev/mapper/fs0)" = "$SIZE" ] || fail "wrong size"
	dm remove fs0 || return 1
	! dm info fs0 2>/dev/null || fail "still there"
}
check "create and remove a foresight device" create_remove

table_round_trip() {
	local majmin t
	majmin=$(printf '%d:%d' "$(stat -c %t $ORIGIN | sed 's/^/0x/')" "$(stat -c %T $ORIGIN | sed 's/^/0x/')")
	dm create fs0 --table "0 $SIZE foresight $ORIGIN" || return 1
	t=$(dm table fs0)
	[ "$t" = "0 $SIZE foresight $majmin" ] || fail "table: '$t'"
	dm remove fs0
	dm create fs0 --table "0 $((SIZE / 2)) foresight $ORIGIN 1 no_discard_passdown" || return 1
	t=$(dm table fs0)
	[ "$t" = "0 $((SIZE / 2)) foresight $majmin 1 no_discard_passdown" ] || fail "table: '$t'"
	# What `dmsetup table` prints builds the same device again.
	dm create fs1 --table "$t" || return 1
	[ "$(dm table fs1)" = "$t" ] || fail "re-created table differs"
	dm remove fs1
	dm remove fs0
	dm create fs0 --table "0 $SIZE foresight $majmin 0" || return 1
	[ "$(dm table fs0)" = "0 $SIZE foresight $majmin" ] || fail "zero features not canonical"
	dm remove fs0
}
check "table reproduces the constructor line" table_round_trip

status_counts() {
	local s
	dm create fs0 --table "0 $SIZE foresight $ORIGIN" || return 1
	dm message fs0 0 reset_stats || return 1
	s=$(dm status fs0 | cut -d' ' -f1-11)
	[ "$s" = "0 $SIZE foresight 0 0 0 0 0 0 0 0" ] || fail "after reset: '$s'"
	dd if=/dev/zero of=/dev/mapper/fs0 bs=4k count=10 oflag=direct status=none || return 1
	# writes: 10 bios, 80 sectors (udev may read the device after a write:
	# reads are counted on their own, below).
	s=$(dm status fs0 | cut -d' ' -f6-11)
	[ "$s" = "10 80 0 0 0 0" ] || fail "writes: '$s'"
	udevadm settle
	dm message fs0 0 reset_stats || return 1
	dd if=/dev/mapper/fs0 of=/dev/null bs=8k count=5 iflag=direct status=none || return 1
	s=$(dm status fs0 | cut -d' ' -f1-11)
	# reads: 5 bios, 80 sectors.
	[ "$s" = "0 $SIZE foresight 5 80 0 0 0 0 0 0" ] || fail "status: '$s'"
	blkdiscard -o 0 -l 1048576 /dev/mapper/fs0 || return 1
	# discard_bios ($8) and discard_sectors ($9).
	[ "$(dm status fs0 | awk '{print ($8 > 0), $9}')" = "1 2048" ] ||
		fail "discard not counted: '$(dm status fs0)'"
	dm remove fs0
}
check "status counts completed bios and sectors" status_counts

messages() {
	dm create fs0 --table "0 $SIZE foresight $ORIGIN" || return 1
	dmesg_mark
	! dm message fs0 0 frobnicate || fail "unknown message accepted"
	dmesg_since | grep -q "Unknown message" || fail "no log line for unknown message"
	! dm message fs0 0 reset_stats now || fail "extra argument accepted"
	dm message fs0 0 reset_stats || fail "reset_stats refused"
	dm remove fs0
}
check "unknown messages are rejected, known ones dispatched" messages

# reject "LINE" "SENTENCE": the table is refused and dmesg says why.
reject() {
	dmesg_mark
	if dm create bad --table "$1" 2>/dev/null; then
		dm remove bad
		fail "accepted: $1"
	fi
	dm remove bad 2>/dev/null
	dmesg_since | grep -qF "$2" || { dmesg_since; fail "no '$2' for: $1"; }
}

malformed() {
	touch /tmp/not-a-device
	reject "0 $SIZE foresight" "Missing origin device" &&
		reject "0 $SIZE foresight /dev/does-not-exist" "Origin device not found" &&
		reject "0 $SIZE foresight /tmp/not-a-device" "Origin is not a block device" &&
		reject "0 $SIZE foresight /dev/null" "Origin is not a block device" &&
		reject "0 $((SIZE + 8)) foresight $ORIGIN" "Target length exceeds the origin device's size" &&
		reject "0 $SIZE foresight $ORIGIN x" "Invalid feature argument count" &&
		reject "0 $SIZE foresight $ORIGIN 2 no_discard_passdown" "Feature argument count does not match" &&
		reject "0 $SIZE foresight $ORIGIN 0 no_discard_passdown" "Invalid core argument count" &&
		reject "0 $SIZE foresight $ORIGIN 0 3 level 5 x" "Core argument count must be even" &&
		reject "0 $SIZE foresight $ORIGIN 0 2 frobnicate 1" "Unknown core argument" &&
		reject "0 $SIZE foresight $ORIGIN 1 no_discard_passdown 2 level 200" "Core argument value out of range" &&
		reject "0 $SIZE foresight $ORIGIN 0 4 min_level 60 max_level 50" "Invalid level range" &&
		reject "0 $SIZE foresight $ORIGIN 1 frobnicate" "Unknown feature" &&
		reject "0 $SIZE foresight $ORIGIN 2 no_discard_passdown no_discard_passdown" "Feature given more than once"
}
check "every malformed table line is rejected with its reason" malformed
check "no kernel warnings after the rejections" dmesg_clean

limits() {
	local nb q o d
	nb=$(nullb nb_lim 64 blocksize=4096 memory_backed=1 discard=1 cache_size=16) || return 1
	dm create fs0 --table "0 $(sectors "$nb") foresight $nb" || return 1
	dm create fs1 --table "0 $(sectors "$nb") foresight $nb 1 no_discard_passdown" || return 1
	o=/sys/block/${nb#/dev/}/queue
	d=/sys/block/$(basename "$(readlink -f /dev/mapper/fs0)")/queue
	for q in logical_block_size physical_block_size discard_granularity \
		discard_max_bytes write_zeroes_max_bytes write_cache fua; do
		[ "$(cat $d/$q)" = "$(cat $o/$q)" ] || fail "$q: dm $(cat $d/$q) origin $(cat $o/$q)"
	done
	[ "$(cat $d/logical_block_size)" = 4096 ] || fail "4K origin not stacked"
	[ $(($(cat $d/optimal_io_size) % 4096)) = 0 ] && [ "$(cat $d/optimal_io_size)" -gt 0 ] ||
		fail "optimal_io_size $(cat $d/optimal_io_size)"
	d=/sys/block/$(basename "$(readlink -f /dev/mapper/fs1)")/queue
	[ "$(cat $d/discard_max_bytes)" = 0 ] || fail "no_discard_passdown still discards"
	[ -e /sys/block/$(basename "$(readlink -f /dev/mapper/fs0)")/slaves/${nb#/dev/} ] ||
		fail "origin not a slave"
	dm remove fs1
	dm remove fs0
	nullb_remove nb_lim
}
check "queue limits stack from the origin (iterate_devices, io_hints)" limits

module_refs() {
	dm create fs0 --table "0 $SIZE foresight $ORIGIN" || return 1
	! rmmod dm_foresight 2>/dev/null || fail "rmmod succeeded with a device present"
	dm remove fs0
	rmmod dm_foresight || fail "rmmod failed after remove"
	! grep -q foresight /proc/modules || fail "still loaded"
	insmod "$FORESIGHT_KO" || fail "reload failed"
	dm targets | grep -q '^foresight' || fail "target not registered after reload"
}
check "rmmod refused while a device exists, clean afterwards" module_refs

leaks() {
	[ -w /sys/kernel/debug/kmemleak ] || fail "kmemleak unavailable"
	local i
	# Each round leaves a device's objects behind if anything leaks: a few
	# rounds show it (and every script is scanned for leaks afterwards).
	for i in $(seq 1 10); do
		dm create fs0 --table "0 $SIZE foresight $ORIGIN 1 no_discard_passdown" || return 1
		dd if=/dev/zero of=/dev/mapper/fs0 bs=4k count=4 oflag=direct status=none
		dm remove fs0 || return 1
	done
	rmmod dm_foresight || return 1
	insmod "$FORESIGHT_KO" || return 1
	echo clear >/sys/kernel/debug/kmemleak
	for i in $(seq 1 10); do
		dm create fs0 --table "0 $SIZE foresight $ORIGIN" || return 1
		dm remove fs0 || return 1
	done
	echo scan >/sys/kernel/debug/kmemleak
	sleep 1
	echo scan >/sys/kernel/debug/kmemleak
	! grep -B2 -A20 'unreferenced object' /sys/kernel/debug/kmemleak | grep -iE 'foresight|dm_' ||
		fail "kmemleak: $(cat /sys/kernel/debug/kmemleak)"
}
check "creating and removing devices leaks nothing (kmemleak)" leaks

check "no kernel warnings" dmesg_clean
ktap_end
