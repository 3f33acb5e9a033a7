#!/usr/bin/env bash
# The prefetch cache: hits served from memory (proven by failing the
# origin's blocks underneath), data identity under writers racing
# predictions, the stale-prefetch race, tiers, the budget, statistics,
# resizing and the lifecycle.
. "$(dirname "$0")/../lib.sh"
ktap_begin "prefetch cache"

W=/tmp/fs-cache
mkdir -p $W
ORIGIN=/dev/ram1
SIZE=$(sectors $ORIGIN)
dmesg_mark

# Status fields of the cache (dmsetup status, 1-based, as awk counts).
CAP=23 CACHED=24 HITS=25 MISSES=26 PARTIAL=27 QUEUED=28 INFLIGHT=29 ERRORS=30 STALE=31 VMISMATCH=32
ISSUED_C=33 COMPLETED_C=34 USED_C=35 WASTED_C=36
ISSUED_P=37 ISSUED_B=41

# wait_fetched DEV N: until N blocks have been fetched (critical tier) and none is in flight.
wait_fetched() {
	local i
	for i in $(seq 1 100); do
		[ "$(st "$1" $COMPLETED_C)" -ge "$2" ] && [ "$(st "$1" $INFLIGHT)" = 0 ] && return 0
		sleep 0.1
	done
	fail "only $(st "$1" $COMPLETED_C) of $2 blocks fetched: $(dm status "$1")"
}

hits_from_memory() {
	# dm-dust under foresight: its bad blocks fail reads once enabled.
	dd if=/dev/urandom of=$ORIGIN bs=1M count=8 status=none
	dm create dust --table "0 $SIZE dust $ORIGIN 0 4096" || return 1
	dm create c0 --table "0 $SIZE foresight /dev/mapper/dust 1 verify 2 cache_mb 8" || return 1
	[ "$(dm message c0 0 prefetch 0 8192 950000)" = 1024 ] || fail "prefetch did not queue 1024 blocks"
	wait_fetched c0 1024
	for b in 3 700 1023; do dm message dust 0 addbadblock $b; done
	dm message dust 0 enable
	# The origin now fails those blocks...
	dd if=/dev/mapper/dust of=/dev/null bs=4k skip=700 count=1 iflag=direct status=none 2>/dev/null &&
		fail "dust did not fail block 700"
	# ... but foresight serves all 1024 from memory, with the right data.
	local hits0
	hits0=$(st c0 $HITS)
	dd if=/dev/mapper/c0 of=$W/got bs=4k count=1024 iflag=direct status=none || fail "read through foresight failed"
	dm message dust 0 disable
	dd if=$ORIGIN of=$W/want bs=4k count=1024 iflag=direct status=none
	cmp $W/got $W/want || fail "cached data differs from the origin's"
	[ $(($(st c0 $HITS) - hits0)) = 1024 ] || fail "hits: $hits0 -> $(st c0 $HITS)"
	[ "$(st c0 $USED_C)" = 1024 ] || fail "used: $(st c0 $USED_C)"
	# Reads larger than a hit's 256 KiB, from an odd sector: each is cut
	# where a hit ends and every part served from memory, none missed.
	local big0 miss0
	big0=$(st c0 $HITS) miss0=$(($(st c0 $MISSES) + $(st c0 $PARTIAL)))
	dm message dust 0 enable
	dd if=/dev/mapper/c0 of=$W/got bs=1M count=3 skip=3584 iflag=direct,skip_bytes status=none ||
		fail "1 MiB reads through foresight failed"
	dm message dust 0 disable
	cmp $W/got <(dd if=$ORIGIN bs=1M count=3 skip=3584 iflag=direct,skip_bytes status=none) ||
		fail "1 MiB reads: cached data differs from the origin's"
	[ $(($(st c0 $MISSES) + $(st c0 $PARTIAL))) = $miss0 ] || fail "1 MiB reads missed: $(dm status c0)"
	[ $(($(st c0 $HITS) - big0)) -ge 12 ] || fail "1 MiB reads: $big0 -> $(st c0 $HITS) hits"
	note "three 1 MiB reads at sector 7: $(($(st c0 $HITS) - big0)) hits"
	[ "$(st c0 $VMISMATCH)" = 0 ] || fail "verify mismatches"
	# A prefetch of a failing block is counted as an error; user I/O is
	# not affected.
	dm message dust 0 addbadblock 3005
	dm message dust 0 enable
	dm message c0 0 prefetch 24000 80 950000 >/dev/null
	wait_fetched c0 1033
	[ "$(st c0 $ERRORS)" = 1 ] || fail "prefetch errors: $(st c0 $ERRORS)"
	dd if=/dev/mapper/c0 of=/dev/null bs=4k skip=3000 count=5 iflag=direct status=none ||
		fail "a read next to the failed prefetch failed"
	dm message dust 0 disable
	note "status: $(dm status c0 | cut -d' ' -f23-)"
	dm remove c0
	dm remove dust
}
check "reads of prefetched blocks are served from memory (origin blocks failed underneath)" hits_from_memory

partial_and_miss() {
	dm create c0 --table "0 $SIZE foresight $ORIGIN 0 2 cache_mb 4" || return 1
	dm message c0 0 prefetch 80 8 1000000 >/dev/null
	wait_fetched c0 1
	local p0 m0
	p0=$(st c0 $PARTIAL) m0=$(st c0 $MISSES)
	# Blocks 10 and 11: one cached, one not.
	dd if=/dev/mapper/c0 of=$W/got bs=8k skip=5 count=1 iflag=direct status=none
	dd if=$ORIGIN of=$W/want bs=8k skip=5 count=1 iflag=direct status=none
	cmp $W/got $W/want || fail "partial hit data differs"
	[ $(($(st c0 $PARTIAL) - p0)) = 1 ] || fail "partial hits: $p0 -> $(st c0 $PARTIAL)"
	dd if=/dev/mapper/c0 of=/dev/null bs=4k skip=5000 count=1 iflag=direct status=none
	[ $(($(st c0 $MISSES) - m0)) = 1 ] || fail "misses: $m0 -> $(st c0 $MISSES)"
	dm remove c0
}
check "a partial hit and a miss go to the origin, counted" partial_and_miss

stale_race() {
	# Reads of block 1000 take 2 s at the origin, writes none, the rest of
	# the device is linear: a prefetch of block 1000 is in flight while a
	# write to it lands.  (Only that block is slow: udev probes the new
	# devices' first and last blocks, which would take minutes otherwise.)
	dm create slow --table "0 8000 linear $ORIGIN 0
8000 8 delay $ORIGIN 8000 2000 $ORIGIN 8000 0
8008 $((SIZE - 8008)) linear $ORIGIN 8008" || return 1
	dm create c0 --table "0 $SIZE foresight /dev/mapper/slow 0 2 cache_mb 4" || return 1
	udevadm settle
	pattern $W/new 4 stale-race || return 1
	dm message c0 0 prefetch 8000 8 1000000 >/dev/null
	dd if=$W/new of=/dev/mapper/c0 bs=4k seek=1000 count=1 oflag=direct status=none
	[ "$(st c0 $INFLIGHT)" = 1 ] || fail "prefetch not in flight during the write: $(dm status c0)"
	poll 20 eval '[ "$(st c0 $INFLIGHT)" = 0 ]' || fail "prefetch still in flight"
	[ "$(st c0 $STALE)" -ge 1 ] || fail "the stale prefetch was not dropped: $(dm status c0)"
	dd if=/dev/mapper/c0 of=$W/got bs=4k skip=1000 count=1 iflag=direct status=none
	cmp $W/got $W/new || fail "a read after the write returned old data"
	dm remove c0
	dm remove slow
}
check "a prefetch in flight when a write lands never installs the old data" stale_race

identity_under_writers() {
	dm create c0 --table "0 $SIZE foresight $ORIGIN 1 verify 2 cache_mb 16" || return 1
	# Verifying writers ...
	verify_writers /dev/mapper/c0 $W/fio.txt
	local fio=$! rounds=0
	# ... and predictions for the blocks they write, streaming in as long
	# as they run.
	while kill -0 $fio 2>/dev/null; do
		rounds=$((rounds + 1))
		dm message c0 0 prefetch $(((rounds % 8) * 2048)) 2048 900000 >/dev/null
		printf '%d 2048 0.6\n' $((((rounds + 3) % 8) * 2048)) | foresight predict push c0 --kind read >/dev/null
		sleep 0.1
	done
	wait $fio || fail "fio: $(tail -5 $W/fio.txt)"
	note "$rounds rounds of predictions during the writers"
	[ $rounds -ge 3 ] || fail "only $rounds rounds of predictions while fio ran"
	sleep 0.5
	note "status: $(dm status c0 | cut -d' ' -f23-)"
	# After the writers: every cached block equals the origin.
	cache_identity /dev/mapper/c0 $ORIGIN
	dm remove c0
}
check "data identity: fio verify writers while predictions for the same blocks stream in" identity_under_writers

# keep_reads: the blocks a read that misses touches are fetched into the
# cache (its own pages are the submitter's: never copied from), so reading
# the same again is served from memory, at any alignment (the origin's
# blocks failed underneath prove it); a cache message turns it off.
keep_reads() {
	dd if=/dev/urandom of=$ORIGIN bs=1M count=8 status=none
	dm create dust --table "0 $SIZE dust $ORIGIN 0 4096" || return 1
	dm create c0 --table "0 $SIZE foresight /dev/mapper/dust 1 verify 4 cache_mb 8 keep_reads 1" || return 1
	dm table c0 | grep -q "keep_reads 1" || fail "table: $(dm table c0)"
	# Sixteen 64 KiB reads from sector 3.
	dd if=/dev/mapper/c0 of=$W/first bs=64k count=16 skip=1536 iflag=direct,skip_bytes status=none ||
		fail "first pass"
	local i
	for i in $(seq 1 100); do
		[ "$(st c0 $QUEUED)" = 0 ] && [ "$(st c0 $INFLIGHT)" = 0 ] && break
		sleep 0.1
	done
	note "after the first pass: $(($(st c0 $CACHED) / 4096)) blocks cached, $(st c0 $ISSUED_P) fetched"
	for b in 3 100 200; do dm message dust 0 addbadblock $b; done
	dm message dust 0 enable
	local h0 m0
	h0=$(st c0 $HITS) m0=$(($(st c0 $MISSES) + $(st c0 $PARTIAL)))
	dd if=/dev/mapper/c0 of=$W/second bs=64k count=16 skip=1536 iflag=direct,skip_bytes status=none ||
		fail "the second pass read the origin's failed blocks"
	dm message dust 0 disable
	cmp $W/first $W/second || fail "the second pass differs"
	cmp $W/first <(dd if=$ORIGIN bs=64k count=16 skip=1536 iflag=direct,skip_bytes status=none) ||
		fail "the reads differ from the origin"
	[ $(($(st c0 $HITS) - h0)) = 16 ] || fail "hits $h0 -> $(st c0 $HITS)"
	[ $(($(st c0 $MISSES) + $(st c0 $PARTIAL))) = $m0 ] || fail "misses on the second pass: $(dm status c0)"
	[ "$(st c0 $VMISMATCH)" = 0 ] || fail "verify mismatches"
	# Off: a read elsewhere leaves nothing.
	dm message c0 0 cache set keep_reads 0 || fail "cache set keep_reads 0"
	local c0
	c0=$(st c0 $CACHED)
	dd if=/dev/mapper/c0 of=/dev/null bs=64k count=4 skip=64 iflag=direct status=none
	[ "$(st c0 $CACHED)" = "$c0" ] || fail "keep_reads 0 kept: $c0 -> $(st c0 $CACHED)"
	dm message c0 0 cache set keep_reads 2 2>/dev/null && fail "keep_reads 2 accepted"
	dm remove c0
	dm remove dust
}
check "keep_reads: the blocks a read misses are fetched into the cache; reading again is served from memory at any alignment" keep_reads

# keep_reads against writers: the fetches reads queue race writes to the
# same blocks (the origin slow on reads): fio verify writers with readers
# of their blocks over a small cache that keeps every read; the writers'
# verification and the device against its origin after.
keep_reads_identity() {
	dm create slow --table "0 $SIZE delay $ORIGIN 0 2 $ORIGIN 0 0" || return 1
	dm create c0 --table "0 $SIZE foresight /dev/mapper/slow 1 verify 4 cache_mb 1 keep_reads 1" || return 1
	verify_writers /dev/mapper/c0 $W/fio.txt
	local fio=$!
	fio --name=r --filename=/dev/mapper/c0 --size=8M --direct=1 --ioengine=libaio --rw=randread \
		--bs=4k --iodepth=8 --time_based --runtime=15 --output=$W/readers.txt &
	local readers=$!
	wait $fio || fail "fio: $(tail -5 $W/fio.txt)"
	wait $readers || fail "readers: $(tail -3 $W/readers.txt)"
	note "status: $(dm status c0 | cut -d' ' -f23-)"
	cache_identity /dev/mapper/c0 $ORIGIN
	dm remove c0
	dm remove slow
}
check "data identity: fio verify writers while the blocks of reads are kept" keep_reads_identity

# A resize carries the cached blocks into the new cache, the most
# valuable first, as many as fit: growing keeps them all (served from
# memory, the origin's blocks failed underneath), shrinking keeps what fits.
resize_carries() {
	dd if=/dev/urandom of=$ORIGIN bs=1M count=8 status=none
	dm create dust --table "0 $SIZE dust $ORIGIN 0 4096" || return 1
	dm create c0 --table "0 $SIZE foresight /dev/mapper/dust 1 verify 2 cache_mb 8" || return 1
	dm message c0 0 prefetch 0 16384 950000 >/dev/null
	wait_fetched c0 2048
	dm message c0 0 cache_mb 16 || return 1
	[ "$(st c0 $CACHED)" = $((8 << 20)) ] || fail "grown to 16 MiB: $(($(st c0 $CACHED) / 4096)) blocks carried"
	for b in 3 700 2000; do dm message dust 0 addbadblock $b; done
	dm message dust 0 enable
	local h0
	h0=$(st c0 $HITS)
	dd if=/dev/mapper/c0 of=$W/got bs=4k count=2048 iflag=direct status=none || fail "read after growing failed"
	dm message dust 0 disable
	cmp $W/got <(dd if=$ORIGIN bs=4k count=2048 iflag=direct status=none) || fail "carried data differs"
	[ $(($(st c0 $HITS) - h0)) = 2048 ] || fail "hits after growing: $h0 -> $(st c0 $HITS)"
	# Shrinking: a quarter fits.
	dm message c0 0 cache_mb 2 || return 1
	[ "$(st c0 $CACHED)" -gt $((3 << 19)) ] || fail "shrunk to 2 MiB: $(st c0 $CACHED) bytes carried"
	h0=$(st c0 $HITS)
	dd if=/dev/mapper/c0 of=$W/got bs=4k count=2048 iflag=direct status=none
	cmp $W/got <(dd if=$ORIGIN bs=4k count=2048 iflag=direct status=none) || fail "data differs after shrinking"
	note "grown 8 -> 16 MiB: 2048 of 2048 blocks carried; shrunk to 2 MiB: $(($(st c0 $CACHED) / 4096)) carried, $(($(st c0 $HITS) - h0)) hits of 2048 reads"
	[ $(($(st c0 $HITS) - h0)) -ge 384 ] || fail "hits after shrinking: $h0 -> $(st c0 $HITS)"
	[ "$(st c0 $VMISMATCH)" = 0 ] || fail "verify mismatches"
	dm remove c0
	dm remove dust
}
check "a resize carries the cached blocks over: all when growing, the most valuable that fit when shrinking" resize_carries

budget_and_stats() {
	dm create c0 --table "0 $SIZE foresight $ORIGIN 0 2 cache_mb 1" || return 1
	[ "$(st c0 $CAP)" = 1048576 ] || fail "capacity: $(st c0 $CAP)"
	dm message c0 0 prefetch 0 80000 990000 >/dev/null
	dm message c0 0 prefetch 0 $SIZE 400000 >/dev/null
	sleep 2
	local cached
	cached=$(st c0 $CACHED)
	[ "$cached" -le 1048576 ] && [ "$cached" -gt 0 ] || fail "cached $cached of 1 MiB"
	dd if=/dev/mapper/c0 of=/dev/null bs=4k count=4000 iflag=direct status=none
	# Consistency: per tier used <= completed <= issued; hits + misses +
	# partial = reads (every read the cache sees is counted).
	dm status c0 | awk -v h=$HITS -v m=$MISSES -v p=$PARTIAL -v rb=4 '{
		for (t = 0; t < 3; t++) {
			i = $(33 + 4 * t); c = $(34 + 4 * t); u = $(35 + 4 * t)
			if (!(u <= c && c <= i)) { print "tier " t ": issued " i " completed " c " used " u; exit 1 }
		}
		if ($h + $m + $p != $rb) { print "hits+misses+partial " $h + $m + $p " != reads " $rb; exit 1 }
	}' || fail "$(dm status c0)"
	note "status: $(dm status c0 | cut -d' ' -f23-)"
	# Resize: 2 MiB (what was cached is carried over), then none.
	cached=$(st c0 $CACHED)
	dm message c0 0 cache_mb 2 || return 1
	[ "$(st c0 $CAP)" = 2097152 ] && [ "$(st c0 $CACHED)" = "$cached" ] || fail "resize: $(dm status c0)"
	dm message c0 0 cache_mb 0 || return 1
	[ "$(st c0 $CAP)" = 0 ] || fail "cache not dropped"
	dd if=/dev/mapper/c0 of=/dev/null bs=4k count=10 iflag=direct status=none
	dm remove c0
}
check "the budget holds, statistics agree, the cache resizes at run time" budget_and_stats

tiers() {
	# Background waits for an idle origin, predictive for load under the
	# limit: with load_limit 0 predictive never goes; critical always does.
	dm create c0 --table "0 $SIZE foresight $ORIGIN 0 6 cache_mb 4 load_limit 0 idle_ms 100000" || return 1
	dm message c0 0 prefetch 0 80 900000 >/dev/null
	dm message c0 0 prefetch 800 80 500000 >/dev/null
	dm message c0 0 prefetch 8000 80 100000 >/dev/null
	wait_fetched c0 10
	sleep 0.5
	[ "$(st c0 $ISSUED_C)" = 10 ] || fail "critical: $(st c0 $ISSUED_C)"
	[ "$(st c0 $ISSUED_P)" = 0 ] || fail "predictive went under load_limit 0"
	[ "$(st c0 $ISSUED_B)" = 0 ] || fail "background went while not idle long enough"
	[ "$(st c0 $QUEUED)" = 20 ] || fail "queued: $(st c0 $QUEUED)"
	# Lift the limits: the rest goes.
	dm message c0 0 cache set load_limit 8 || return 1
	dm message c0 0 cache set idle_ms 1 || return 1
	dm message c0 0 prefetch 16000 8 900000 >/dev/null
	sleep 1
	[ "$(st c0 $ISSUED_P)" = 10 ] && [ "$(st c0 $ISSUED_B)" = 10 ] ||
		fail "after lifting: $(dm status c0 | cut -d' ' -f23-)"
	# Predictions below min_ppm are dropped; cached ones are not queued again.
	[ "$(dm message c0 0 prefetch 20000 8 10000)" = 0 ] || fail "below min_ppm queued"
	[ "$(dm message c0 0 prefetch 0 8 900000)" = 0 ] || fail "cached block queued again"
	dm remove c0
}
check "tiers: critical at once, predictive under the load limit, background when idle" tiers

lifecycle() {
	dm create c0 --table "0 $SIZE foresight $ORIGIN 0 2 cache_mb 4" || return 1
	dm message c0 0 prefetch 0 800 900000 >/dev/null
	wait_fetched c0 100
	# Suspended: no prefetch runs.
	dm suspend c0
	dm message c0 0 prefetch 8000 800 900000 >/dev/null
	sleep 0.5
	[ "$(st c0 $ISSUED_C)" = 100 ] || fail "prefetch ran while suspended: $(st c0 $ISSUED_C)"
	dm resume c0
	wait_fetched c0 200
	# A reload starts an empty cache.
	dm reload c0 --table "$(dm table c0)"
	dm resume c0
	[ "$(st c0 $CACHED)" = 0 ] || fail "cache kept across reload: $(st c0 $CACHED)"
	dm remove c0
}
check "suspend stops prefetching; a reload drops the cache" lifecycle

netlink_cache() {
	dm create c0 --table "0 $SIZE foresight $ORIGIN" || return 1
	foresight policy set c0 --cache-mb 4 --critical-ppm 700000 || return 1
	[ "$(st c0 $CAP)" = 4194304 ] || fail "cache-mb over netlink: $(st c0 $CAP)"
	printf '0 800 0.9\n' | foresight predict push c0 --kind read >/dev/null || return 1
	wait_fetched c0 100
	dd if=/dev/mapper/c0 of=/dev/null bs=4k count=100 iflag=direct status=none
	foresight status c0 --json >$W/st.json
	jq -e '.[0].cache_hits == 100' $W/st.json || fail "$(cat $W/st.json)"
	# The thresholds of one request are applied together, checked once.
	foresight policy set c0 --critical-ppm 100 --predictive-ppm 50 --min-ppm 10 || fail "lowering all thresholds"
	foresight policy set c0 --min-ppm 999999 2>/dev/null && fail "out-of-order thresholds accepted"
	dm table c0 | grep -q 'critical_ppm 100 predictive_ppm 50 min_ppm 10' || fail "table: $(dm table c0)"
	dm remove c0
}
check "netlink: policy-set cache-mb, read predictions, cache counters" netlink_cache

no_warnings() {
	echo scan >/sys/kernel/debug/kmemleak 2>/dev/null
	dmesg_since | grep -E 'WARNING|BUG|Oops|refcount|leak' && fail "kernel complained"
	return 0
}
check "no kernel warning" no_warnings

ktap_end
