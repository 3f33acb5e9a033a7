#!/usr/bin/env bash
# The prefetch cache, tried as users found it: never stale across run-time
# enables and resizes with writes in flight; hits for reads at any 512-byte
# offset and length, every read counted; data identity under racing
# sub-block writes, discards and write-zeroes; bounded work on a multi-TiB
# device (whole-device prefetch and discards while fio runs: the debug
# kernel's detectors watch, see run-guest-tests).
. "$(dirname "$0")/../lib.sh"
ktap_begin "prefetch cache: coherence, alignment, bounded work"

W=/tmp/fs-trust
mkdir -p $W
ORIGIN=/dev/ram1
SIZE=$(sectors $ORIGIN)

# Status fields (dmsetup status, 1-based, as awk counts).
READS=4 CAP=23 CACHED=24 HITS=25 MISSES=26 PARTIAL=27 QUEUED=28 INFLIGHT=29 VMISMATCH=32
COMPLETED_C=34 DROPPED=45

# counted DEV: every read the cache saw is a hit, a partial hit or a miss.
seen() { dm status "$1" | awk -v h=$HITS -v m=$MISSES -v p=$PARTIAL '{ print $h + $m + $p }'; }

# wait_idle DEV: no prefetch queued or in flight.
wait_idle() {
	local i
	for i in $(seq 1 150); do
		[ "$(st "$1" $QUEUED)" = 0 ] && [ "$(st "$1" $INFLIGHT)" = 0 ] && return 0
		sleep 0.1
	done
	fail "prefetch not idle: $(dm status "$1")"
}

# slow_writes: /dev/mapper/slow, the origin with writes delayed 3 s and reads
# not; foresight c0 on it with TABLE_ARGS.
slow_writes() {
	dm create slow --table "0 $SIZE delay $ORIGIN 0 0 $ORIGIN 0 3000" || return 1
	dm create c0 --table "0 $SIZE foresight /dev/mapper/slow $*" || return 1
	udevadm settle
}

# race CHANGE...: a 4 KiB write to block 50 in flight (3 s at the origin);
# meanwhile the cache CHANGEs (messages), block 50 is predicted and fetched
# (reads are fast).  Once the write completed, a read of block 50 must
# return the new data.
race() {
	pattern $W/old 4 old-data && pattern $W/new 4 new-data || return 1
	dd if=$W/old of=/dev/mapper/slow bs=4k seek=50 count=1 oflag=direct status=none
	dd if=$W/new of=/dev/mapper/c0 bs=4k seek=50 count=1 oflag=direct status=none &
	local writer=$!
	sleep 1
	local m
	for m in "$@"; do
		# shellcheck disable=SC2086
		dm message c0 0 $m || fail "message $m"
	done
	local queued
	queued=$(dm message c0 0 prefetch 400 8 1000000)
	note "prediction for block 50 during the write: $queued queued"
	sleep 1
	wait $writer || fail "the write failed"
	dd if=/dev/mapper/c0 of=$W/got bs=4k skip=50 count=1 iflag=direct status=none
	cmp -s $W/got $W/new || fail "a read after the write completed returned old data: $(dm status c0 | cut -d' ' -f23-)"
	# The hold ended with the write: predictions go again.
	wait_idle c0
	[ "$(dm message c0 0 prefetch 8000 8 1000000)" = 1 ] || fail "the new cache stayed held"
}

enable_race() {
	slow_writes || return 1
	race "cache_mb 4"
	dm remove c0
	dm remove slow
}
check "cache enabled (cache_mb 0 -> 4) with a write in flight: no stale read" enable_race

double_resize_race() {
	slow_writes 0 2 cache_mb 4 || return 1
	race "cache_mb 8" "cache_mb 12"
	dm remove c0
	dm remove slow
}
check "cache resized twice with a write in flight: no stale read" double_resize_race

disable_enable_race() {
	slow_writes 0 2 cache_mb 4 || return 1
	race "cache_mb 0" "cache_mb 4"
	dm remove c0
	dm remove slow
}
check "cache disabled then enabled with a write in flight: no stale read" disable_enable_race

# Resizes that carry blocks over, back to back, while fio verify writers
# write and read their blocks, predictions for them stream in and reads
# are kept (the origin slow on reads): the writers' verification, and the
# device against the origin after.
resize_identity() {
	dm create slow --table "0 $SIZE delay $ORIGIN 0 1 $ORIGIN 0 0" || return 1
	dm create c0 --table "0 $SIZE foresight /dev/mapper/slow 1 verify 4 cache_mb 4 keep_reads 1" || return 1
	verify_writers /dev/mapper/c0 $W/fio.txt
	local fio=$! rounds=0 sizes=(4 8 2 16 6 3)
	while kill -0 $fio 2>/dev/null; do
		dm message c0 0 prefetch $(((rounds % 4) * 4096)) 4096 900000 >/dev/null
		dm message c0 0 cache_mb ${sizes[$((rounds % 6))]} || fail "resize"
		rounds=$((rounds + 1))
		sleep 0.2
	done
	wait $fio || fail "fio: $(tail -5 $W/fio.txt)"
	note "$rounds resizes during the writers; status: $(dm status c0 | cut -d' ' -f23-)"
	cache_identity /dev/mapper/c0 $ORIGIN
	dm remove c0
	dm remove slow
}
check "data identity: resizes carrying blocks over while writers, predictions and kept reads race" resize_identity

# read_at DEV SECTOR COUNT FILE: COUNT sectors from SECTOR, one direct read
# (one bio).
read_at() {
	dd if="$1" of="$4" bs=$(($3 * 512)) skip=$(($2 * 512)) count=1 iflag=direct,skip_bytes status=none
}

# fill_origin MIB: random data on the origin, written directly (the origin's
# page cache must not be written back under foresight later).
fill_origin() { dd if=/dev/urandom of=$ORIGIN bs=1M count="$1" oflag=direct status=none; }

unaligned_hits() {
	fill_origin 4
	dm create c0 --table "0 $SIZE foresight $ORIGIN 0 2 cache_mb 8" || return 1
	udevadm settle
	dm message c0 0 prefetch 0 4096 1000000 >/dev/null
	wait_idle c0
	local h0 s0 r0 off len n=0
	h0=$(st c0 $HITS) s0=$(seen c0) r0=$(st c0 $READS)
	# Offsets and lengths at 512-byte steps, crossing block boundaries.
	for off in 1 7 9 15 63 100 1001 3000; do
		for len in 1 3 7 8 9 17 63 255; do
			read_at /dev/mapper/c0 $off $len $W/got
			read_at $ORIGIN $off $len $W/want
			cmp -s $W/got $W/want || fail "data differs at sector $off, $len sectors"
			n=$((n + 1))
		done
	done
	local hits=$(($(st c0 $HITS) - h0))
	note "$n reads at odd offsets and lengths: $hits hits"
	[ $hits = $n ] || fail "hits $hits of $n: $(dm status c0 | cut -d' ' -f23-)"
	# Partly cached (blocks 511 and 512), and wholly uncached.
	read_at /dev/mapper/c0 4093 7 $W/got
	read_at $ORIGIN 4093 7 $W/want
	cmp -s $W/got $W/want || fail "partial hit data differs"
	read_at /dev/mapper/c0 5001 3 $W/got
	read_at $ORIGIN 5001 3 $W/want
	cmp -s $W/got $W/want || fail "miss data differs"
	# Every read the device completed since was seen by the cache.
	local reads=$(($(st c0 $READS) - r0)) seen=$(($(seen c0) - s0))
	[ $reads = $seen ] || fail "reads $reads, hits+misses+partial $seen"
	[ $(($(st c0 $PARTIAL))) -ge 1 ] || fail "no partial hit counted"
	dm remove c0
}
check "reads at 512-byte offsets and odd lengths hit; every read is counted" unaligned_hits

identity_racing() {
	fill_origin 2
	dm create c0 --table "0 $SIZE foresight $ORIGIN 1 verify 2 cache_mb 4" || return 1
	udevadm settle
	# Predictions for the whole region stream in all along.
	(
		while [ ! -e $W/stop ]; do
			dm message c0 0 prefetch 0 4096 1000000 >/dev/null
			sleep 0.05
		done
	) &
	local pred=$! i off len mode bad=0
	rm -f $W/stop
	pattern $W/src 512 racing || return 1
	# 15 of each kind (a round takes a second or more under emulation).
	local rounds=60
	for i in $(seq 1 $rounds); do
		off=$((RANDOM % 4000)) len=$((1 + RANDOM % 31)) mode=$((i % 4))
		case $mode in
		0 | 1) dd if=$W/src of=/dev/mapper/c0 bs=$((len * 512)) skip=$((RANDOM % 900 * 512)) \
			seek=$((off * 512)) count=1 iflag=skip_bytes oflag=direct,seek_bytes conv=notrunc status=none ;;
		2) blkdiscard -z -o $((off * 512)) -l $((len * 512)) /dev/mapper/c0 ;;
		3) blkdiscard -o $(((off / 8) * 4096)) -l 4096 /dev/mapper/c0 2>/dev/null || true ;;
		esac
		# Read back what was just written, at another alignment.
		read_at /dev/mapper/c0 $((off > 0 ? off - 1 : 0)) $((len + 2)) $W/got
		read_at $ORIGIN $((off > 0 ? off - 1 : 0)) $((len + 2)) $W/want
		cmp -s $W/got $W/want || { bad=$((bad + 1)); echo "iteration $i (mode $mode): sector $off +$len differs"; }
	done
	touch $W/stop
	wait $pred
	note "$rounds racing writes, write-zeroes and discards read back: $bad mismatches; $(dm status c0 | awk -v h=$HITS '{print $h}') hits"
	[ $bad = 0 ] || fail "$bad reads returned data other than the origin's"
	[ "$(st c0 $HITS)" -gt 0 ] || fail "no hit at all: the race was not exercised"
	wait_idle c0
	dd if=/dev/mapper/c0 of=$W/got bs=4k count=512 iflag=direct status=none
	dd if=$ORIGIN of=$W/want bs=4k count=512 iflag=direct status=none
	cmp -s $W/got $W/want || fail "device and origin differ after the race"
	dm remove c0
}
check "data identity: sub-block writes, write-zeroes and discards racing predictions, read back at odd offsets" identity_racing

# huge NAME ORIGIN DISCARD: foresight NAME on ORIGIN; fio runs while
# whole-device predictions (message and netlink) and, if DISCARD is 1,
# whole-device discards go on, and is stopped after them.
huge() {
	local name=$1 origin=$2 discard=$3 sz i d0
	sz=$(sectors "$origin")
	dm create "$name" --table "0 $sz foresight $origin 0 2 cache_mb 16" || return 1
	udevadm settle
	fio --name=busy --filename=/dev/mapper/"$name" --direct=1 --ioengine=libaio --rw=randrw \
		--bs=4k --iodepth=8 --time_based --runtime=600 --output=$W/fio-$name.txt &
	local fio=$! r0
	r0=$(st "$name" $READS)
	# fio takes seconds to start under emulation: its I/O flows first.
	poll 60 eval '[ "$(st "$name" $READS)" -gt "$r0" ]' || fail "fio issued no read"
	d0=$(st "$name" $DROPPED)
	for i in 1 2 3; do
		dm message "$name" 0 prefetch 0 "$sz" 900000 >/dev/null || fail "prefetch"
		if [ "$discard" = 1 ]; then
			blkdiscard /dev/mapper/"$name" || fail "whole-device discard"
		fi
		foresight predict push "$name" --kind read <<<"0 $sz 0.8" >/dev/null || fail "predict push"
		sleep 1
	done
	kill -0 $fio || fail "fio ended before the predictions and discards did"
	# SIGINT: fio stops its jobs, reports, and exits with 128 (1 had an
	# I/O failed; each job's report says err= 0 or its error).
	kill -INT $fio
	local rc=0
	wait $fio || rc=$?
	[ $rc = 128 ] && grep -q 'err= 0' $W/fio-$name.txt && ! grep -Eq 'err= *[1-9]' $W/fio-$name.txt ||
		fail "fio: status $rc: $(tail -3 $W/fio-$name.txt)"
	local dropped=$(($(st "$name" $DROPPED) - d0))
	note "$name: whole-device predictions dropped $dropped blocks past the capacity; cache $(dm status "$name" | cut -d' ' -f23-30)"
	[ $dropped -gt 1000000000 ] || fail "dropped only $dropped blocks"
	dm remove "$name"
}

huge_devices() {
	# 4 TiB without memory.  O(blocks) work under the cache's lock would
	# stall a CPU for minutes here.  null_blk has no discard without
	# memory backing (and with it, its own discard is O(sectors)), so the
	# discards go to a 4 TiB dm-zero, which accepts and drops them.
	local nb
	nb=$(nullb trust 4194304 memory_backed=0) || return 1
	huge bignb "$nb" 0
	nullb_remove trust
	dm create zero4t --table "0 $((4 << 31)) zero" || return 1
	huge bigzero /dev/mapper/zero4t 1
	dm remove zero4t
}
check "4 TiB devices: whole-device prefetch, and whole-device discards, while fio runs" huge_devices

ktap_end
