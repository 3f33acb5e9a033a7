#!/usr/bin/env bash
# foreshadow's source as it fails in the world.  Over a real NBD source
# (qemu-storage-daemon exports the source read-only on 127.0.0.1, the
# kernel's nbd driver with an I/O timeout is the shadow's source device)
# the copy equals the source; a server stopped with SIGSTOP fails the reads
# that need it within the driver's timeout and no others, pauses copying
# and marks nothing; so does a killed server; after either, the source
# reconnected on a new nbd device and the table reloaded onto it, hydration
# completes with the source's data.  A source that corrupts what it reads
# (dm-flakey): without checksums the corruption reaches the destination;
# with the source side's checksums every bad copy is refused and fetched
# again, and the copy equals the source.
. "$(dirname "$0")/../lib.sh"
ktap_begin "foreshadow: a source that stops, dies or corrupts"

W=/tmp/fs-shadow-nbd
mkdir -p $W
MB=16
PORT=10810
# The nbd driver's I/O timeout, seconds: without one, a request to a
# stopped server never fails (see foreshadow.rst).
NBD_TIMEOUT=3
SRC=$(nullb nsrc $MB memory_backed=1) || exit 1
DST=$(nullb ndst $MB memory_backed=1) || exit 1
META=$(nullb nmeta 4 memory_backed=1) || exit 1
SIZE=$(sectors $SRC)
# 64 KiB regions: 256 of them.
REGION=128
REGIONS=$((SIZE / REGION))
ip link set lo up

pattern $W/src $((MB * 1024)) shadow-nbd || exit 1
dd if=$W/src of=$SRC bs=1M oflag=direct status=none

sf() { st shn "$1"; }
hydrated() { sf 5 | cut -d/ -f1; }
mode() { sf 21; }
same() { cmp -n $((MB << 20)) "$1" $W/src; }
region_of() { dd if="$1" bs=64k skip="$2" count=1 iflag=direct status=none; }

# serve: the source exported, read only, as `disk`.
serve() { nbd_serve $SRC $PORT ro; }
unserve() { nbd_unserve; }

# connect N [rw]: /dev/nbdN is the exported source (read only unless rw),
# with the I/O timeout.
connect() {
	local ro=-readonly
	[ "${2:-}" != rw ] || ro=
	nbd-client 127.0.0.1 $PORT /dev/nbd$1 -N disk $ro -timeout $NBD_TIMEOUT >$W/nbd.log 2>&1 ||
		{ echo "nbd-client: $(cat $W/nbd.log)"; return 1; }
	sized() { [ "$(sectors /dev/nbd$1 2>/dev/null)" = "$SIZE" ]; }
	poll 5 sized $1 && return 0
	echo "/dev/nbd$1 has $(sectors /dev/nbd$1) sectors, not $SIZE"
	return 1
}
disconnect() { nbd-client -d /dev/nbd$1 >/dev/null 2>&1 || true; }

fresh() {
	dd if=/dev/zero of=$META bs=1M count=4 oflag=direct status=none
	dd if=/dev/zero of=$DST bs=1M count=$MB oflag=direct status=none
}

# table N: shn's table over /dev/nbdN; background copying at 1 MiB/s (16 s
# for the whole source), four regions at a time.
table() {
	echo "0 $SIZE foreshadow $META $DST /dev/nbd$1 $REGION 0 6 bandwidth_kbps 1024 inflight 2 batch_regions 4"
}

# completes WHEN: copying unthrottled, hydration completes, and the
# destination and the device hold the source's data.
completes() {
	dm message shn 0 set bandwidth_kbps 0 || return 1
	wait_mode complete 120 || return 1
	same $DST || fail "the destination differs from the source$1"
	same /dev/mapper/shn || fail "the device differs from the source$1"
}

teardown() {
	dm remove shn 2>/dev/null
	dm remove shfl 2>/dev/null
	unserve
	local n
	for n in 0 1 2 3; do
		disconnect $n
	done
	true
}

mode_is() { [ "$(mode)" = "$1" ]; }
wait_mode() { poll $2 mode_is $1 || fail "state $(mode), not $1 after $2 s: $(dm status shn)"; }

# switch_source N: the source reconnected as /dev/nbdN, and the table
# reloaded onto it; what was hydrated stays hydrated.
switch_source() {
	connect $1 || return 1
	local before
	before=$(hydrated)
	table $1 | dm load shn && dm suspend shn && dm resume shn || return 1
	[ "$(hydrated)" -ge "$before" ] || fail "hydrated $(hydrated) after the reload, was $before"
}

copies_nbd() {
	teardown
	fresh
	serve && connect 0 || return 1
	table 0 | dm create shn || return 1
	# Reads while copying: of regions not yet there (from the source, over
	# NBD) and of regions copied already.
	local r
	for r in 200 3 250 201 0; do
		cmp <(region_of /dev/mapper/shn $r) <(region_of $W/src $r) || fail "region $r read while copying"
	done
	[ "$(sf 13)" -gt 0 ] || fail "no read went to the source: $(dm status shn)"
	completes "" || return 1
	note "over NBD: $(dm status shn)"
	teardown
}

# The read of a region not yet there fails within the timeout and a bit;
# one of a region already there succeeds.  Copying backs off; nothing is
# marked while the source fails; on a new connection it completes.
# $1: how the server fails (STOP or KILL).
source_fails() {
	teardown
	fresh
	serve && connect 0 || return 1
	table 0 | dm create shn || return 1
	at_least() { [ "$(hydrated)" -ge 8 ]; }
	poll 10 at_least
	[ "$(hydrated)" -ge 8 ] || fail "hydrated $(hydrated) after 10 s: $(dm status shn)"
	if [ "$1" = STOP ]; then
		kill -STOP $QSD
	else
		kill -KILL $QSD
		wait $QSD 2>/dev/null
		QSD=
	fi
	local t0=$SECONDS
	region_of /dev/mapper/shn 200 >/dev/null 2>$W/err && fail "a read of a missing region succeeded"
	local took=$((SECONDS - t0))
	note "a read needing the source failed after $took s ($1; nbd timeout $NBD_TIMEOUT s): $(head -c 200 $W/err)"
	[ $took -le $((NBD_TIMEOUT * 4 + 10)) ] || fail "the read took $took s to fail"
	cmp <(region_of /dev/mapper/shn 0) <(region_of $W/src 0) || fail "region 0 (hydrated) unreadable while the source fails"
	# A write to a region already there does not need the source.
	dd if=$W/src of=/dev/mapper/shn bs=4k skip=1 seek=1 count=1 oflag=direct,sync status=none ||
		fail "a write to a hydrated region failed while the source fails"
	# Copying pauses, with errors counted; the hydrated count holds still.
	errors() { [ "$(sf 17)" -gt 0 ]; }
	poll 10 errors
	[ "$(sf 17)" -gt 0 ] || fail "no copy error counted: $(dm status shn)"
	local held
	held=$(hydrated)
	sleep 3
	[ "$(hydrated)" = "$held" ] || fail "hydrated moved from $held to $(hydrated) while the source failed"
	note "while failing: $(dm status shn)"
	# The server comes back (continued, or restarted): the old connection
	# is dead, a new one is made and the table moves onto it.
	if [ "$1" = STOP ]; then
		kill -CONT $QSD
	else
		serve || return 1
	fi
	switch_source 1 || return 1
	disconnect 0
	# A region marked while the source failed, without its copy, would
	# hold the destination's zeros here.
	completes " after the source came back" || return 1
	note "recovered: $(dm status shn)"
	teardown
}

# Rollback (foreshadow.rst): the VM goes back to the source, which the
# target only read (here it could have written: the export and the nbd
# device are writable); what the VM wrote on the destination is lost.
rollback() {
	teardown
	fresh
	nbd_serve $SRC $PORT && connect 0 rw || return 1
	table 0 | dm create shn || return 1
	pattern $W/w 64 rollback-writes || return 1
	dd if=$W/w of=/dev/mapper/shn bs=64k seek=7 oflag=direct status=none || return 1
	dd if=$W/w of=/dev/mapper/shn bs=4k seek=$((100 * 16 + 5)) count=3 oflag=direct,sync status=none || return 1
	cmp <(region_of /dev/mapper/shn 7) $W/w || fail "the write to region 7 is not on the device"
	cmp <(dd if=/dev/mapper/shn bs=4k skip=$((100 * 16 + 5)) count=3 iflag=direct status=none) <(head -c 12288 $W/w) ||
		fail "the write into region 100 is not on the device"
	dm remove shn || return 1
	unserve
	disconnect 0
	same $SRC || fail "the source changed"
}

# The source's reads come back with a random byte changed, one in three.
corrupting_source() {
	teardown
	fresh
	echo "0 $SIZE flakey $SRC 0 0 1 2 random_read_corrupt 333333333" | dm create shfl || return 1
	local t="0 $SIZE foreshadow $META $DST /dev/mapper/shfl $REGION 1 no_hydration"
	# The control: without checksums, the corruption is copied.
	echo "$t" | dm create shn || return 1
	dm message shn 0 hydration on || return 1
	wait_mode complete 120 || return 1
	same $DST && fail "the control: a corrupting source gave a clean copy"
	[ "$(sf 19)" = 0 ] || fail "mismatches counted without checksums: $(dm status shn)"
	dm remove shn || return 1
	fresh
	# verify_crc: no region is copied before its checksum is known (udev
	# reads the new device at once, and a read makes its region urgent).
	echo "0 $SIZE foreshadow $META $DST /dev/mapper/shfl $REGION 2 no_hydration verify_crc" | dm create shn || return 1
	# A read makes its region urgent, which without verify_crc is copied at
	# once; a write into a missing region waits for that copy, here in
	# vain: it fails (and does not keep a suspend waiting).
	region_of /dev/mapper/shn 9 >/dev/null || return 1
	timeout 60 dd if=$W/src of=/dev/mapper/shn bs=4k count=1 seek=$((30 * 16 + 1)) oflag=direct status=none 2>/dev/null &&
		fail "a write to a region without its checksum succeeded"
	sleep 1
	[ "$(hydrated)" = 0 ] || fail "hydrated $(hydrated) before any checksum: $(dm status shn)"
	timeout 60 dmsetup suspend shn && dmsetup resume shn || fail "suspend/resume with copies waiting for checksums"
	# The source side checksums its own disk (not through the corruption).
	foresight shadow crc $SRC --dev shn || return 1
	foresight shadow crc $SRC --region-sectors $REGION >$W/crc.msgs || return 1
	[ "$(wc -l <$W/crc.msgs)" = 1 ] && [ "$(wc -w <$W/crc.msgs)" = $((REGIONS + 2)) ] ||
		fail "crc messages: $(head -c 100 $W/crc.msgs)"
	dm message shn 0 hydration on || return 1
	wait_mode complete 300 || return 1
	[ "$(sf 19)" -gt 0 ] || fail "no checksum mismatch counted: $(dm status shn)"
	same $DST || fail "the destination differs from the source, checksums given"
	note "checksums given: $(dm status shn)"
	foresight shadow status shn | grep -q "checksum mismatches" || fail "foresight shadow status: $(foresight shadow status shn)"
	# Checksums of regions past the end, or not hexadecimal, are refused.
	dm message shn 0 crc $REGIONS 0 2>/dev/null && fail "a checksum past the end accepted"
	dm message shn 0 crc 0 xyz 2>/dev/null && fail "a checksum 'xyz' accepted"
	dm remove shn
	dm remove shfl
}

check "over NBD on 127.0.0.1: reads while copying and the whole copy equal the source" copies_nbd
check "an NBD server stopped (SIGSTOP): reads needing it fail within the timeout, copying pauses, nothing is marked; reconnected, it completes" source_fails STOP
check "an NBD server killed: the same, after a restart" source_fails KILL
check "rollback: the source is as it was (only read), the destination's writes stay there" rollback
check "a source that corrupts reads: copied as is without checksums (the control); with the source's checksums (verify_crc), refused and fetched again" corrupting_source
teardown
dm remove shn 2>/dev/null
for d in nsrc ndst nmeta; do nullb_remove $d; done
ktap_end
