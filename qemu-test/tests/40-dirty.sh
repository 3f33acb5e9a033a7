#!/usr/bin/env bash
# The dirty-block log: written blocks against what the log reports, epochs,
# levels, the controller, concurrent writers.
. "$(dirname "$0")/../lib.sh"
ktap_begin "dirty log"

ORIGIN=/dev/ram0
SIZE=$(sectors $ORIGIN)
W=/tmp/fs-dirty
mkdir -p $W
CHECK=$(dirname "$0")/../dirty-check


dd_ground_truth() {
	dm create fs0 --table "0 $SIZE foresight $ORIGIN 0 4 level 100 adaptive 0" || return 1
	[ "$(dm message fs0 0 dirty rotate)" = 1 ] || fail "rotate did not start epoch 1"
	: >$W/truth
	local i off
	for i in $(seq 1 150); do
		off=$(((RANDOM * 32768 + RANDOM) % (SIZE / 8)))
		dd if=/dev/urandom of=/dev/mapper/fs0 bs=4k seek=$off count=1 oflag=direct status=none
		echo "$((off * 4096)) 4096" >>$W/truth
	done
	# Sector-sized writes count for their whole 4 KiB block.
	for i in $(seq 1 30); do
		off=$(((RANDOM * 32768 + RANDOM) % SIZE))
		dd if=/dev/urandom of=/dev/mapper/fs0 bs=512 seek=$off count=1 oflag=direct status=none
		echo "$((off * 512)) 512" >>$W/truth
	done
	# A discard and a write-zeroes are writes too.
	blkdiscard -o $((SIZE * 512 / 2)) -l 65536 /dev/mapper/fs0 && echo "$((SIZE * 512 / 2)) 65536" >>$W/truth
	blkdiscard -z -o 4096 -l 8192 /dev/mapper/fs0 && echo "4096 8192" >>$W/truth
	extents fs0 cur $W/cur
	head -1 $W/cur | grep -q '^epoch 1 tracked$' || fail "header: $(head -1 $W/cur)"
	note "dd at level 100: $($CHECK $W/truth $W/cur)"
	$CHECK $W/truth $W/cur || return 1
	# After a rotation the same blocks are the previous epoch's; the new one is empty.
	dm message fs0 0 dirty rotate >/dev/null
	extents fs0 prev $W/prev
	$CHECK $W/truth $W/prev || return 1
	extents fs0 cur $W/cur
	[ "$(wc -l <$W/cur)" = 1 ] || fail "new epoch not empty: $(cat $W/cur)"
	[ "$(st fs0 18)" = 0 ] || fail "dirty_bytes of the new epoch: $(st fs0 18)"
	[ "$(st fs0 19)" -gt 0 ] || fail "prev_dirty_bytes: $(st fs0 19)"
	dm remove fs0
}
check "dd writes at 4 KiB: none missing from the log" dd_ground_truth

fio_ground_truth() { # level [feature words, counted]
	rm -f $W/fio.log
	dm create fs0 --table "0 $SIZE foresight $ORIGIN ${2:-0} 4 level $1 adaptive 0" || return 1
	dm message fs0 0 dirty rotate >/dev/null
	fio --name=gt --filename=/dev/mapper/fs0 --direct=1 --ioengine=libaio --rw=randwrite \
		--bs=4k --iodepth=16 --number_ios=3000 --size=$((SIZE * 512)) \
		--write_iolog=$W/fio.log --randrepeat=0 >/dev/null || return 1
	extents fs0 cur $W/cur
	note "level $1 grain $(st fs0 17) bytes: $($CHECK $W/fio.log $W/cur)"
	$CHECK $W/fio.log $W/cur || return 1
	dm remove fs0
}
check "fio random writes at level 100: none missing" fio_ground_truth 100
check "fio random writes at level 50 (coarser): none missing" fio_ground_truth 50
check "fio random writes at level 1 (1 MiB grains): none missing" fio_ground_truth 1
# The log of a device this size is flat (a plain bitmap until it is listed);
# buffered_log: per-CPU buffers folded into the adaptive sets in the
# background (the default past 1 TiB).
check "buffered_log: fio random writes at level 100: none missing" fio_ground_truth 100 "1 buffered_log"
check "buffered_log: fio random writes at level 50: none missing" fio_ground_truth 50 "1 buffered_log"

# Which log a table gets: flat up to 1 TiB (a bit of memory per 4 KiB
# block), buffered past it or when its memory budget is less than twice the
# bitmap.  Told apart by the log's memory (status field 20): the flat bitmap
# of 4 GiB takes 128 KiB, that of 2 TiB would take 64 MiB.
log_mode() {
	local nb sz flat buf big budget
	nb=$(nullb nb_mode 4096 irqmode=0) || return 1
	sz=$(sectors "$nb")
	dm create fs0 --table "0 $sz foresight $nb" || return 1
	flat=$(st fs0 20)
	dm remove fs0
	dm create fs0 --table "0 $sz foresight $nb 1 buffered_log" || return 1
	buf=$(st fs0 20)
	dm remove fs0
	dm create fs0 --table "0 $sz foresight $nb 0 2 max_memory_kb 255" || return 1
	budget=$(st fs0 20)
	dm remove fs0
	! dm create fs0 --table "0 $sz foresight $nb 2 flat_log buffered_log" 2>/dev/null ||
		fail "flat_log with buffered_log accepted"
	nullb_remove nb_mode
	dm create z2t --table "0 $((1 << 32)) zero" || return 1
	dm create fsz --table "0 $((1 << 32)) foresight /dev/mapper/z2t" || return 1
	big=$(st fsz 20)
	dm remove fsz
	dm remove z2t
	note "log memory: 4 GiB default $flat B, buffered_log $buf B, max_memory_kb 255 $budget B; 2 TiB default $big B"
	# The same log but for the bitmap.
	[ $((flat - buf)) -ge $((128 << 10)) ] || fail "the default log of 4 GiB is not flat"
	[ "$budget" = "$buf" ] || fail "a budget of 255 KiB took a flat bitmap ($budget B)"
	[ "$big" -lt $((16 << 20)) ] || fail "the default log of 2 TiB took a flat bitmap"
}
check "the log is flat by default up to 1 TiB, buffered past it or past its memory budget" log_mode

level_zero() {
	dm create fs0 --table "0 $SIZE foresight $ORIGIN 0 2 adaptive 0" || return 1
	dm message fs0 0 dirty rotate >/dev/null
	[ "$(st fs0 13)" = tracked ] || fail "state $(st fs0 13)"
	dm message fs0 0 dirty level 0 || return 1
	[ "$(st fs0 13)" = untracked ] || fail "level 0 state: $(st fs0 13)"
	[ "$(st fs0 17)" = 0 ] || fail "grain at level 0: $(st fs0 17)"
	dd if=/dev/zero of=/dev/mapper/fs0 bs=4k count=4 oflag=direct status=none
	extents fs0 cur $W/cur
	head -1 $W/cur | grep -q untracked || fail "extents header: $(head -1 $W/cur)"
	dm message fs0 0 dirty level 100 || return 1
	# Writes went unlogged in this epoch: it stays a full-copy epoch.
	[ "$(st fs0 13)" = incomplete ] || fail "after re-enabling: $(st fs0 13)"
	dm message fs0 0 dirty rotate >/dev/null
	[ "$(st fs0 13) $(st fs0 14)" = "tracked incomplete" ] ||
		fail "after rotation: $(st fs0 13) $(st fs0 14)"
	dm remove fs0
}
check "level 0 reports untracked; the epoch stays incomplete until rotated" level_zero

# idle_ticks DEV: a second idle, then a write, a second idle, another:
# the controller runs (it is kicked by writes) and accounts the idle time.
idle_ticks() {
	local i
	for i in 1 2; do
		sleep 1
		dd if=/dev/zero of=/dev/mapper/"$1" bs=4k count=1 oflag=direct status=none
	done
	sleep 0.5
}

adapts() {
	local l0 l1
	dm create fs0 --table "0 $SIZE foresight $ORIGIN 0 10 level 100 base 10 w_io 20000 interval_ms 100 hysteresis 5" ||
		return 1
	dm status fs0 >/dev/null
	idle_ticks fs0
	l0=$(st fs0 15)
	[ "$l0" -lt 40 ] || fail "idle level stayed at $l0"
	fio --name=load --filename=/dev/mapper/fs0 --direct=1 --ioengine=libaio --rw=randwrite \
		--bs=64k --iodepth=8 --time_based --runtime=3 >/dev/null || return 1
	l1=$(st fs0 15)
	note "idle level $l0, under write load $l1 ($(st fs0 16))"
	[ "$l1" -gt $((l0 + 5)) ] || fail "level did not rise under load: $l0 -> $l1"
	[ "$(st fs0 16)" = auto ] || fail "mode $(st fs0 16)"
	dm message fs0 0 dirty level 70
	[ "$(st fs0 15) $(st fs0 16)" = "70 fixed" ] || fail "fixed level: $(st fs0 15) $(st fs0 16)"
	dm message fs0 0 dirty set base 50 || fail "dirty set refused"
	dm table fs0 | grep -q 'base 50' || fail "table lacks the new base: $(dm table fs0)"
	! dm message fs0 0 dirty set min_level 200 2>/dev/null || fail "bad value accepted"
	dm remove fs0
}
check "the controller raises the level under write load and lowers it when idle" adapts

recovers() {
	local l
	# base 0, min_level 0: idle, the controller turns logging off.
	dm create fs0 --table "0 $SIZE foresight $ORIGIN 0 12 level 100 base 0 min_level 0 w_io 20000 interval_ms 100 hysteresis 5" ||
		return 1
	dm message fs0 0 dirty rotate >/dev/null
	idle_ticks fs0
	[ "$(st fs0 15) $(st fs0 16) $(st fs0 13)" = "0 auto untracked" ] ||
		fail "idle: level $(st fs0 15) $(st fs0 16), state $(st fs0 13)"
	# Writes at level 0 are still measured: the controller turns it back on.
	fio --name=load --filename=/dev/mapper/fs0 --direct=1 --ioengine=libaio --rw=randwrite \
		--bs=64k --iodepth=8 --time_based --runtime=3 >/dev/null || return 1
	l=$(st fs0 15)
	note "level 0 when idle, $l under write load"
	[ "$l" -gt 5 ] || fail "level stayed at $l under write load"
	# The epoch had writes that went unlogged: a full-copy epoch.
	[ "$(st fs0 13)" = incomplete ] || fail "state after logging resumed: $(st fs0 13)"
	dm message fs0 0 dirty rotate >/dev/null
	[ "$(st fs0 13) $(st fs0 14)" = "tracked incomplete" ] ||
		fail "after rotation: $(st fs0 13) $(st fs0 14)"
	dm remove fs0
}
check "logging the controller turned off comes back under write load (level 0 still measures demand)" recovers

concurrent() { # [feature words, counted]
	local pid l i
	rm -f $W/a.log $W/b.log $W/union
	dm create fs0 --table "0 $SIZE foresight $ORIGIN ${1:-0} 4 level 100 adaptive 0" || return 1
	fio --filename=/dev/mapper/fs0 --direct=1 --ioengine=libaio --rw=randwrite --bs=4k \
		--iodepth=8 --size=$((SIZE * 512)) --number_ios=4000 --randrepeat=0 \
		--name=a --write_iolog=$W/a.log --name=b --write_iolog=$W/b.log --bs=16k \
		>/dev/null 2>&1 &
	pid=$!
	i=0
	while kill -0 $pid 2>/dev/null; do
		i=$((i + 1))
		l=$((RANDOM % 100 + 1))
		dm message fs0 0 dirty level $l
		dm message fs0 0 dirty rotate >/dev/null
		extents fs0 prev $W/p
		cat $W/p >>$W/union
		sleep 0.2
	done
	wait $pid || fail "fio failed"
	dm message fs0 0 dirty rotate >/dev/null
	extents fs0 prev $W/p
	cat $W/p >>$W/union
	cat $W/a.log $W/b.log >$W/truth
	note "$i rotations with level changes during the run"
	[ $i -gt 2 ] || fail "too few rotations to mean anything"
	$CHECK $W/truth $W/union || return 1
	dm remove fs0
}
check "two writers on two CPUs, levels changing and epochs rotating: none missing" concurrent
check "buffered_log: two writers on two CPUs, levels changing and epochs rotating: none missing" concurrent "1 buffered_log"

# flat_log (forced: the default at this size is flat too) on a 1 TiB dm-zero
# (no memory behind it): a whole-device discard is one long extent, which
# takes the buffer (bounded work in end_io) and is logged whole.
flat_discard() {
	local sz=$((1 << 31))
	dm create z1t --table "0 $sz zero" || return 1
	dm create fsz --table "0 $sz foresight /dev/mapper/z1t 1 flat_log 4 level 100 adaptive 0" || return 1
	dm message fsz 0 dirty rotate >/dev/null
	dd if=/dev/zero of=/dev/mapper/fsz bs=4k count=1 seek=12345 oflag=direct status=none
	blkdiscard /dev/mapper/fsz || fail "whole-device discard"
	note "dirty after a 1 TiB discard: $(st fsz 18) bytes, log memory $(st fsz 20)"
	[ "$(st fsz 18)" = $((sz * 512)) ] || fail "dirty_bytes $(st fsz 18), expected $((sz * 512))"
	dm remove fsz
	dm remove z1t
}
check "flat_log: a whole-device discard of 1 TiB is logged whole" flat_discard

prelog() {
	local m0 m1
	dm create fs0 --table "0 $SIZE foresight $ORIGIN 0 4 level 100 adaptive 0" || return 1
	m0=$(st fs0 20)
	[ "$(dm message fs0 0 dirty prelog 0 65536)" = 0 ] || fail "prelog missed regions"
	m1=$(st fs0 20)
	note "log memory $m0 -> $m1 bytes after pre-logging 32 MiB"
	[ "$m1" -gt "$m0" ] || fail "pre-logging allocated nothing"
	[ "$(dm message fs0 0 dirty predict 1048576)" = "" ] || fail "predict refused"
	dm remove fs0
}
check "predictive pre-logging allocates fine structures ahead of writes" prelog

budget() {
	local nb
	nb=$(nullb nb_budget 4096 irqmode=0) || return 1
	rm -f $W/fio.log
	dm create fs0 --table "0 $(sectors "$nb") foresight $nb 0 6 level 100 adaptive 0 max_memory_kb 8" || return 1
	dm message fs0 0 dirty rotate >/dev/null
	fio --name=budget --filename=/dev/mapper/fs0 --direct=1 --ioengine=libaio --rw=randwrite \
		--bs=4k --iodepth=16 --number_ios=5000 --randrepeat=0 --norandommap \
		--write_iolog=$W/fio.log >/dev/null || return 1
	extents fs0 cur $W/cur
	note "8 KiB budget, 5000 scattered writes over 4 GiB: $($CHECK $W/fio.log $W/cur)," \
		"memory $(st fs0 20) B, coarse_fallbacks $(st fs0 21), degraded $(st fs0 22)"
	$CHECK $W/fio.log $W/cur || return 1
	[ "$(st fs0 22)" = 1 ] || fail "degraded not reported"
	[ "$(st fs0 21)" -gt 0 ] || fail "no coarse fallbacks counted"
	dm remove fs0
	nullb_remove nb_budget
}
check "past its memory budget the log tracks coarser, loses nothing, and says so" budget

check "no kernel warnings" dmesg_clean
rm -rf $W
ktap_end
