#!/usr/bin/env bash
# The fault campaign: stamped writes (qemu-test/stamp) and checked reads
# through foresight, with the prefetch cache on and the helper's daemon
# pushing predictions, while the origin fails writes and reads in windows
# (dm-flakey error_writes/error_reads over dm-dust bad blocks); then the
# same under suspend/resume and table-reload storms.  Every block must end
# as its last acknowledged write (or a later failed one), a read through
# foresight must equal the origin's, every attempted write must be in the
# dirty log, and the kernel must report nothing.
. "$(dirname "$0")/../lib.sh"
ktap_begin "fault campaign"

REPO=$(cd "$(dirname "$0")/../.." && pwd)
STAMP=$REPO/qemu-test/stamp
W=/tmp/fs-faults
mkdir -p $W
RAM=/dev/ram0
META=/dev/ram1
SIZE=$(sectors $RAM)
# The blocks written: 16 MiB, so reads find them cached and rewrites race
# the cache.
FIRST=256 COUNT=4096
dmesg_mark

# dust0 <- flakey0 <- fs0.  Flakey is up for 2 s, then fails reads and
# writes for 1 s.
FLAKEY_UP="0 $SIZE flakey /dev/mapper/dust0 0 2 1 2 error_reads error_writes"
FLAKEY_CLEAN="0 $SIZE linear /dev/mapper/dust0 0"
FS_TABLE="0 $SIZE foresight /dev/mapper/flakey0 0 8 metadata_dev $META level 100 adaptive 0 cache_mb 16"

setup() {
	dd if=/dev/zero of=$META bs=1M count=4 oflag=direct status=none
	dm create dust0 --table "0 $SIZE dust $RAM 0 4096" || return 1
	dm create flakey0 --table "$FLAKEY_CLEAN" || return 1
	dm create fs0 --table "$FS_TABLE" || return 1
	"$STAMP" fill /dev/mapper/fs0 $FIRST $COUNT $W/journal >/dev/null || return 1
	dm message fs0 0 dirty rotate >/dev/null
	# Bad blocks under the written range: reads of them fail while dust is on.
	local b
	for b in 300 1000 2047 3333 4000; do dm message dust0 0 addbadblock $b >/dev/null; done
	dm message dust0 0 quiet >/dev/null
}

faults_on() {
	dm message dust0 0 enable >/dev/null
	dm reload flakey0 --table "$FLAKEY_UP" && dm resume flakey0
}

faults_off() {
	dm message dust0 0 disable >/dev/null
	dm reload flakey0 --table "$FLAKEY_CLEAN" && dm resume flakey0
}

# The daemon learns from the trace and pushes predictions the whole time.
daemon_start() {
	foresight daemon fs0 --duration 600 --interval-ms 200 --log-file $W/daemon.log &
	DAEMON=$!
}
daemon_stop() {
	kill -INT $DAEMON 2>/dev/null
	wait $DAEMON 2>/dev/null
	return 0
}

# Random reads give the daemon nothing to learn: predictions of 1 MiB
# ranges of the written blocks keep the cache full of blocks the writers
# are about to overwrite.
pusher_start() {
	(while :; do
		dm message fs0 0 prefetch $(((FIRST + RANDOM % (COUNT - 256)) * 8)) 2048 900000 >/dev/null 2>&1
		sleep 0.2
	done) &
	PUSHER=$!
}
pusher_stop() {
	kill $PUSHER 2>/dev/null
	wait $PUSHER 2>/dev/null
	return 0
}

# verify LABEL: blocks as their journal says; through foresight equals the
# origin; every attempted write in the dirty log.
verify() {
	"$STAMP" check /dev/mapper/fs0 $FIRST $COUNT $W/journal >$W/check.fs || fail "$1: through foresight: $(cat $W/check.fs)"
	"$STAMP" check $RAM $FIRST $COUNT $W/journal >$W/check.ram || fail "$1: on the origin: $(cat $W/check.ram)"
	cmp <(dd if=/dev/mapper/fs0 bs=4k skip=$FIRST count=$COUNT iflag=direct status=none) \
		<(dd if=$RAM bs=4k skip=$FIRST count=$COUNT iflag=direct status=none) ||
		fail "$1: a read through foresight differs from the origin"
	{
		dm message fs0 0 dirty extents cur
		dm message fs0 0 dirty extents prev
	} >$W/extents
	grep -q '^epoch .* tracked$' $W/extents || fail "$1: an epoch is not tracked: $(grep ^epoch $W/extents)"
	"$STAMP" blocks $W/journal | python3 -c '
import sys
ext = []
for line in open(sys.argv[1]):
    w = line.split()
    if w[0] != "epoch":
        ext.append((int(w[0]), int(w[0]) + int(w[1])))
missing = [b for b in map(int, sys.stdin) if not any(s <= b * 8 and b * 8 + 8 <= e for s, e in ext)]
print(len(missing), "attempted blocks missing from the dirty log", missing[:10])
sys.exit(1 if missing else 0)' $W/extents >$W/missing || fail "$1: $(cat $W/missing)"
	note "$1: $(cat $W/check.fs)"
}

failures() {
	setup || return 1
	daemon_start
	pusher_start
	faults_on || return 1
	"$STAMP" run /dev/mapper/fs0 $FIRST $COUNT 25 $W/journal 2 2 >$W/run1 || fail "stamped I/O: $(cat $W/run1)"
	faults_off
	pusher_stop
	daemon_stop
	note "windows of failures: $(cat $W/run1 | head -1)"
	grep -Eq 'write_errors=[1-9]' $W/run1 || fail "no write failed: the windows did not open ($(head -1 $W/run1))"
	grep -Eq 'read_errors=[1-9]' $W/run1 || fail "no read failed ($(head -1 $W/run1))"
	note "daemon: $(grep -c accepted= $W/daemon.log) pushes; cache: hits $(st fs0 25) partial $(st fs0 27)" \
		"stale fetches dropped $(st fs0 31) prefetch errors $(st fs0 30)"
	[ "$(st fs0 25)" -gt 0 ] || fail "the cache served no read"
	verify "origin failing"
}
check "stamped writes and reads while the origin fails in windows: errors reach the submitter, no block ends wrong, the cache agrees with the origin, the dirty log has every attempted write" failures

# suspend/resume and reloads of foresight's table (same metadata device:
# the log carries over), with the origin failing.
storm() {
	local end=$((SECONDS + $1)) n=0 r=0
	while [ $SECONDS -lt $end ]; do
		dm suspend fs0 && dm resume fs0 && n=$((n + 1))
		dm reload fs0 --table "$FS_TABLE" && dm resume fs0 && r=$((r + 1))
	done
	echo "$n $r" >$W/storm
}

storms() {
	daemon_start
	pusher_start
	faults_on || return 1
	storm 25 &
	local spid=$!
	"$STAMP" run /dev/mapper/fs0 $FIRST $COUNT 25 $W/journal 2 2 >$W/run2 || fail "stamped I/O: $(cat $W/run2)"
	wait $spid
	faults_off
	pusher_stop
	daemon_stop
	note "under storms ($(cut -d' ' -f1 $W/storm) suspend/resume, $(cut -d' ' -f2 $W/storm) reloads): $(head -1 $W/run2)"
	[ "$(cut -d' ' -f1 $W/storm)" -gt 0 ] && [ "$(cut -d' ' -f2 $W/storm)" -gt 0 ] || fail "no storm: $(cat $W/storm)"
	verify "suspend/reload storms"
	dm remove fs0
	dm remove flakey0
	dm remove dust0
}
check "the same under suspend/resume and table-reload storms: no block ends in a state a write did not leave it in" storms

check "no kernel warnings" dmesg_clean
ktap_end
