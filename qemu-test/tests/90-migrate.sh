#!/usr/bin/env bash
# `foresight migrate`: a foresight source over memory-backed null_blk,
# copied to a destination exported over NBD on 127.0.0.1 by
# qemu-storage-daemon (QEMU's own NBD server: what libvirt runs on a
# destination host for --copy-storage-all) or to a local block device;
# stamped writes during the migration; at the switchover (sources
# suspended) each origin equals its destination.  Then the faults: the
# server killed or stopped mid-copy, destination errors, the tool killed
# while the sources are suspended, Ctrl-C, abort at ready, a second tool
# rotating.
. "$(dirname "$0")/../lib.sh"
ktap_begin "foresight migrate"

REPO=$(cd "$(dirname "$0")/../.." && pwd)
STAMP=$REPO/qemu-test/stamp
W=/tmp/fs-migrate
rm -rf $W
mkdir -p $W
ip link set lo up
MB=48
PORT=10809
URI=nbd://127.0.0.1:$PORT/disk

SRC=$(nullb msrc $MB memory_backed=1 discard=1)
DST=$(nullb mdst $MB memory_backed=1 discard=1)
SRC2=$(nullb msrc2 16 memory_backed=1 discard=1)
DST2=$(nullb mdst2 16 memory_backed=1 discard=1)
SRC3=$(nullb msrc3 $MB memory_backed=1)
SZ=$(sectors $SRC)
dm create fs0 --table "0 $SZ foresight $SRC 0" || exit 1
dm create fs1 --table "0 $(sectors $SRC2) foresight $SRC2 0" || exit 1
SZ2=$(sectors $SRC2)
dm create dsterr --table "0 $((SZ2 / 2)) linear $DST2 0
$((SZ2 / 2)) $((SZ2 / 2)) error" || exit 1

# serve DEV: DEV exported as `disk` on 127.0.0.1:$PORT.
serve() { nbd_serve "$1" $PORT; }
unserve() { nbd_unserve; }

# dcmp A B [MIB]: the same bytes, read with O_DIRECT (the first MIB MiB).
dcmp() {
	local n=${3:+count=$3}
	cmp <(dd if="$1" bs=1M iflag=direct status=none $n) <(dd if="$2" bs=1M iflag=direct status=none $n)
}

state() { dmsetup info "$1" | awk '/^State:/ {print $2}'; }

# copying PID: waits until the migration PID (--json into $W/events) owns
# its sources and copies (its `start` event), plus a second.
copying() {
	local i
	for i in $(seq 1 300); do
		grep -q '"event":"start"' $W/events && { sleep 1; return 0; }
		kill -0 $1 2>/dev/null || break
		sleep 0.1
	done
	fail "the migration did not start: $(tail -3 $W/out)"
}

# A pattern over the whole source, and the same destination state to
# start from each time (garbage, so a block not copied shows).
pattern $W/pat $((MB * 1024)) seed1 || exit 1
pattern $W/junk $((MB * 1024)) junk || exit 1
pattern $W/pat2 $((16 * 1024)) seed2 || exit 1
fill() {
	dd if=$W/pat of=/dev/mapper/fs0 bs=1M oflag=direct status=none || return 1
	dd if=$W/junk of=$DST bs=1M oflag=direct status=none
}
# The fault cases migrate the small fs1 (16 MiB) to mdst2: they are about
# what happens to the source, not about the bulk of the copy.
fill_small() {
	dd if=$W/pat2 of=/dev/mapper/fs1 bs=1M oflag=direct status=none || return 1
	dd if=$W/junk of=$DST2 bs=1M count=16 oflag=direct status=none
}

# The switchover command: runs with the sources suspended; records their
# state and whether each origin equals its destination.
cat >$W/at-switchover <<EOF
#!/bin/bash
for d in \$FORESIGHT_SOURCES; do dmsetup info \$d | awk '/^State:/ {print \$2}'; done >$W/states
set -- \$FORESIGHT_ORIGINS
o1=\$1 o2=\${2:-}
{ cmp <(dd if=\$o1 bs=1M iflag=direct status=none) <(dd if=$DST bs=1M iflag=direct status=none) && echo same || echo differ; } >$W/cmp
[ -z "\$o2" ] || { cmp <(dd if=\$o2 bs=1M iflag=direct status=none) <(dd if=$DST2 bs=1M iflag=direct status=none) && echo same || echo differ; } >>$W/cmp
echo "\$FORESIGHT_DESTINATIONS" >$W/dests
EOF
chmod +x $W/at-switchover

idle() {
	fill || return 1
	serve $DST || return 1
	local before
	before=$(dm status fs0 | awk '{print $15, $16}')
	foresight migrate fs0 $URI --json --verify --switchover-cmd $W/at-switchover >$W/events || fail "exit $?: $(tail -3 $W/events)"
	unserve
	grep -q '"event":"done"' $W/events || fail "no report: $(tail -2 $W/events)"
	[ "$(cat $W/states)" = SUSPENDED ] || fail "at the switchover fs0 was $(cat $W/states)"
	[ "$(cat $W/cmp)" = same ] || fail "the destination differs from the origin at the switchover"
	[ "$(state fs0)" = SUSPENDED ] || fail "after the commit fs0 is $(state fs0), not left suspended"
	dm resume fs0
	[ "$(dm status fs0 | awk '{print $15, $16}')" = "$before" ] || fail "log settings not restored: $before -> $(dm status fs0 | awk '{print $15, $16}')"
	note "idle: $(grep '"event":"done"' $W/events | python3 -c 'import json,sys; r=json.load(sys.stdin); print("sent %d MiB for %d MiB (%d MiB zeroes), %d rounds, suspended to commit %.0f ms (verify included), to the end of the switchover command %.0f ms" % (r["sent_bytes"]>>20, r["bytes"]>>20, r["zero_bytes"]>>20, r["rounds"], r["commit_ms"], r["downtime_ms"]))')"
}
check "an idle source migrates to an NBD export: at the switchover fs0 is suspended and the destination equals the origin; fs0 stays suspended; the log's settings come back" idle

# stamped_migration DEV SECONDS WRITERS BANDWIDTH: the stamped writers
# (journal $W/journal, filled before) write blocks 0-4095 of DEV for SECONDS
# while DEV migrates to $DST at BANDWIDTH; the migration must succeed, the
# origin equal the destination at the switchover, every acknowledged stamp
# be there, and the bulk pass must have found writes behind it.  Sets
# `bulk` to the bytes written behind and ahead of the bulk pass.
stamped_migration() {
	local dev=$1 secs=$2 writers=$3 bw=$4 writer rc=0
	serve $DST || return 1
	"$STAMP" run /dev/mapper/$dev 0 4096 "$secs" $W/journal "$writers" 0 >$W/run &
	writer=$!
	sleep 2
	foresight migrate $dev $URI --json --bandwidth "$bw" --switchover-cmd $W/at-switchover >$W/events || rc=$?
	unserve
	dm resume $dev
	wait $writer
	[ $rc = 0 ] || fail "exit $rc: $(tail -3 $W/events)"
	# The switchover command compares each origin with its destination.
	[ "$(cat $W/cmp)" = same ] || fail "the destination differs from the origin at the switchover"
	"$STAMP" check /dev/mapper/$dev 0 4096 $W/journal >$W/check || fail "stamps: $(cat $W/check)"
	grep -q '"event":"round"' $W/events || fail "no round copied the writes of the bulk pass"
	# The bulk pass rotated the log as it went (about once a second):
	# writes where it had copied went to the first round (those ahead of
	# it, it copied itself).
	bulk=$(grep '"event":"bulk"' $W/events | jq -r '"\(.rewritten_bytes) \(.ahead_bytes)"')
	[ "${bulk% *}" -gt 0 ] || fail "bulk pass: nothing written behind it ($bulk)"
}

under_writes() {
	fill || return 1
	"$STAMP" fill /dev/mapper/fs0 0 4096 $W/journal >/dev/null || return 1
	local bulk
	stamped_migration fs0 15 2 16M
	note "under writes: bulk pass written behind/ahead of it (KiB) $((${bulk% *} >> 10))/$((${bulk#* } >> 10)); $(head -1 $W/run); $(grep '"event":"done"' $W/events | python3 -c 'import json,sys; r=json.load(sys.stdin); print("rounds %d, dirty after each %s, final %d KiB, suspended to commit %.0f ms (final copy %.0f ms), sent %d MiB for %d MiB" % (r["rounds"], [d>>10 for d in r["dirty_history"]], r["final_bytes"]>>10, r["commit_ms"], r["final_copy_ms"], r["sent_bytes"]>>20, r["bytes"]>>20))')"
}
check "with stamped writes going on: rounds copy what the bulk pass missed, and at the switchover every origin equals its destination" under_writes

# in_flight: the same over an origin whose writes dm-delay holds 300 ms, so
# that writes are in flight across the bulk pass's rotations (a write
# belongs to the epoch current when it completes: one that completes after
# a rotation, in a span copied before it completed, must still reach the
# first round).
in_flight() {
	local sz bulk
	sz=$(sectors $SRC3)
	# Stamped first (not through the delay): the writers' 16 MiB.
	"$STAMP" fill $SRC3 0 4096 $W/journal >/dev/null || return 1
	dm create dly --table "0 $sz delay $SRC3 0 0 $SRC3 0 300" || return 1
	dm create fsd --table "0 $sz foresight /dev/mapper/dly 0" || return 1
	dd if=$W/junk of=$DST bs=1M oflag=direct status=none
	stamped_migration fsd 12 16 8M
	note "writes held 300 ms: bulk pass written behind/ahead of it (KiB) $((${bulk% *} >> 10))/$((${bulk#* } >> 10)), $(grep -c '"event":"round"' $W/events) rounds; $(head -1 $W/run)"
	dm remove fsd
	dm remove dly
}
check "writes held in flight (dm-delay, 300 ms) across the bulk pass's rotations: at the switchover the origin equals the destination, every acknowledged stamp is there" in_flight

# deferred: a writer rewriting a hot 4 MiB again and again; --defer (the
# range the model predicts will be rewritten) copies it once, at the
# switchover, instead of in the bulk pass and again in rounds: fewer bytes
# sent, and at the switchover the origin still equals the destination.
deferred() {
	local mode sent=()
	echo "0 8192 1.0" >$W/defer
	for mode in plain defer; do
		fill || return 1
		"$STAMP" fill /dev/mapper/fs0 0 1024 $W/journal >/dev/null || return 1
		serve $DST || return 1
		"$STAMP" run /dev/mapper/fs0 0 1024 12 $W/journal 2 0 >$W/run &
		local writer=$! rc=0 args=()
		[ $mode = defer ] && args=(--defer $W/defer)
		sleep 2
		foresight migrate fs0 $URI --json --bandwidth 16M --downtime-ms 1000 "${args[@]}" \
			--switchover-cmd $W/at-switchover >$W/events || rc=$?
		unserve
		dm resume fs0
		wait $writer
		[ $rc = 0 ] || fail "$mode: exit $rc: $(tail -3 $W/events)"
		[ "$(cat $W/cmp)" = same ] || fail "$mode: the destination differs from the origin at the switchover"
		"$STAMP" check /dev/mapper/fs0 0 1024 $W/journal >$W/check || fail "$mode: stamps: $(cat $W/check)"
		sent+=($(grep '"event":"done"' $W/events | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["sent_bytes"])'))
		note "$mode: $(grep '"event":"done"' $W/events | python3 -c 'import json,sys; r=json.load(sys.stdin); print("sent %.1f MiB for %d MiB, %d rounds, dirty after each %s KiB, final %d KiB (deferred %d KiB), suspended to commit %.0f ms" % (r["sent_bytes"]/2**20, r["bytes"]>>20, r["rounds"], [d>>10 for d in r["dirty_history"]], r["final_bytes"]>>10, r["deferred_bytes"]>>10, r["commit_ms"]))')"
	done
	grep '"event":"deferred"' $W/events | jq -e '.bytes == 4194304' >/dev/null || fail "not deferred: $(grep deferred $W/events)"
	[ "${sent[1]}" -lt "${sent[0]}" ] || fail "deferring sent ${sent[1]} bytes, not fewer than ${sent[0]}"
}
check "--defer: a range rewritten again and again is copied once, at the switchover: fewer bytes sent than without, the destination equal to the origin" deferred

two_disks() {
	fill || return 1
	dd if=$W/pat2 of=/dev/mapper/fs1 bs=1M oflag=direct status=none || return 1
	serve $DST || return 1
	foresight migrate fs0 $URI fs1 $DST2 --json --switchover-cmd $W/at-switchover >$W/events || fail "exit $?: $(tail -3 $W/events)"
	unserve
	dm resume fs0
	dm resume fs1
	[ "$(cat $W/states | tr '\n' ' ')" = "SUSPENDED SUSPENDED " ] || fail "at the switchover: $(cat $W/states)"
	[ "$(cat $W/cmp | tr '\n' ' ')" = "same same " ] || fail "origins vs destinations: $(cat $W/cmp)"
	grep -q "$DST2" $W/dests || fail "destinations: $(cat $W/dests)"
}
check "two disks (one over NBD, one a local block device) switch over at one point" two_disks

# running: after an abort, the source fs1 runs (not suspended), takes a
# write, and no tool owns its epochs.
running() {
	[ "$(state fs1)" = ACTIVE ] || { fail "fs1 is $(state fs1)"; return; }
	timeout 20 dd if=/dev/zero of=/dev/mapper/fs1 bs=4k count=1 seek=100 oflag=direct status=none ||
		fail "a write to fs1 did not complete"
	foresight dirty rotate fs1 >/dev/null || fail "ownership not released: $(foresight dirty rotate fs1 2>&1)"
}

server_killed() {
	fill_small || return 1
	serve $DST2 || return 1
	foresight migrate fs1 $URI --json --bandwidth 2M --io-timeout 5 >$W/events 2>$W/out &
	local pid=$! rc=0
	copying $pid
	kill -9 $QSD
	wait $pid || rc=$?
	unserve
	[ $rc = 1 ] || fail "exit $rc, wanted 1: $(tail -3 $W/out)"
	running
	note "server killed: $(grep -m1 aborting $W/out)"
}
check "the NBD server killed mid-copy: the migration fails (exit 1), the source runs on" server_killed

server_stopped() {
	fill_small || return 1
	serve $DST2 || return 1
	foresight migrate fs1 $URI --json --bandwidth 2M --io-timeout 4 >$W/events 2>$W/out &
	local pid=$! rc=0 t
	copying $pid
	kill -STOP $QSD
	t=$SECONDS
	wait $pid || rc=$?
	t=$((SECONDS - t))
	unserve
	[ $rc = 1 ] || fail "exit $rc, wanted 1: $(tail -3 $W/out)"
	[ $t -le 30 ] || fail "took $t s to notice a stopped server (io-timeout 4 s)"
	grep -q 'no reply' $W/out || fail "$(tail -3 $W/out)"
	running
	note "server stopped: failed after $t s"
}
check "the NBD server stopped (SIGSTOP) mid-copy: the copy times out (exit 1), the source runs on" server_stopped

dest_errors() {
	fill_small || return 1
	serve /dev/mapper/dsterr || return 1
	local rc=0
	foresight migrate fs1 $URI >$W/events 2>$W/out || rc=$?
	unserve
	[ $rc = 1 ] || fail "exit $rc, wanted 1: $(tail -3 $W/out)"
	running
	note "destination errors: $(grep -m1 aborting $W/out)"
}
check "a destination failing writes: the migration fails (exit 1), the source runs on" dest_errors

# A writer faster than the copy: the rounds stall; --on-stall throttle slows
# it (write_kbps on the source) until the rounds converge, then lifts it.
stall_throttled() {
	fill_small || return 1
	"$STAMP" fill /dev/mapper/fs1 0 4096 $W/journal2 >/dev/null || return 1
	serve $DST2 || return 1
	# Stamped 4 KiB random writes from two threads for the whole migration.
	"$STAMP" run /dev/mapper/fs1 0 4096 300 $W/journal2 2 0 >$W/run2 &
	local writer=$! rc=0
	sleep 2
	foresight migrate fs1 $URI --json --bandwidth 2M --on-stall throttle --max-rounds 40 \
		>$W/events 2>$W/out || rc=$?
	# Switched over: the source is suspended, the writer waits on it.
	dm resume fs1 2>/dev/null
	kill $writer 2>/dev/null
	wait $writer 2>/dev/null
	unserve
	note "$(grep -c '"event":"dirty"' $W/events) passes; $(grep '"event":"throttle"' $W/events | tr '\n' ' ')"
	[ $rc = 0 ] || fail "exit $rc: $(tail -3 $W/out)"
	grep -q '"event":"throttle"' $W/events || fail "never throttled: $(grep '"event":"dirty"' $W/events | tail -3)"
	[ "$(foresight status fs1 --json | jq '.[0].write_kbps')" = 0 ] ||
		fail "the limit stayed: $(foresight status fs1 --json | jq '.[0].write_kbps')"
	"$STAMP" check /dev/mapper/fs1 0 4096 $W/journal2 >$W/check2 || fail "stamps: $(cat $W/check2)"
	running
}
check "a writer the rounds cannot catch: --on-stall throttle slows it, the migration completes, the limit is lifted" stall_throttled

# The bulk pass in the order of the model's heat map: the daemon learns fs1's
# reads (MiB 12-13), `foresight heat` ranks its regions, migrate --order
# copies those first and then the rest ascending.
heat_order() {
	fill_small || return 1
	foresight daemon fs1 --duration 120 --interval-ms 200 --log-file $W/daemon.log \
		--state-file $W/daemon.json &
	local daemon=$! i rc=0
	for i in $(seq 1 200); do
		dd if=/dev/mapper/fs1 of=/dev/null bs=4k skip=$((3072 + RANDOM % 512)) count=1 \
			iflag=direct status=none
	done
	sleep 2
	# The two regions read (the next ones the map ranks, with a low
	# probability, would be copied right after them, too soon for this
	# script to tell the order from a slow guest).
	foresight heat fs1 --state-file $W/daemon.json --top 2 >$W/order
	kill -INT $daemon
	wait $daemon
	note "order: $(grep -v '^#' $W/order | paste -sd';')"
	# 1 MiB regions in sectors: MiB 12 starts at 24576, MiB 13 at 26624.
	[ "$(grep -v '^#' $W/order | cut -d' ' -f1 | sort -n | paste -sd' ')" = "24576 26624" ] ||
		{ fail "the hottest regions are not where the reads were: $(cat $W/order)"; return; }
	serve $DST2 || return 1
	foresight migrate fs1 $URI --json --bandwidth 512K --order $W/order >$W/events 2>$W/out &
	local pid=$!
	# The hot MiBs arrive first; MiB 10, in the ascending rest, some 20 s
	# later at this rate.
	for i in $(seq 1 300); do
		cmp -s <(dd if=$DST2 bs=1M skip=12 count=2 iflag=direct status=none) \
			<(dd if=$W/pat2 bs=1M skip=12 count=2 status=none) && break
		kill -0 $pid 2>/dev/null || break
		sleep 0.1
	done
	local hot=no early=no
	cmp -s <(dd if=$DST2 bs=1M skip=12 count=2 iflag=direct status=none) \
		<(dd if=$W/pat2 bs=1M skip=12 count=2 status=none) && hot=yes
	cmp -s <(dd if=$DST2 bs=1M skip=10 count=1 iflag=direct status=none) \
		<(dd if=$W/pat2 bs=1M skip=10 count=1 status=none) && early=yes
	kill -INT $pid
	wait $pid || rc=$?
	unserve
	[ $hot = yes ] || fail "the hot region never reached the destination: $(tail -3 $W/out)"
	[ $early = no ] || fail "MiB 10 was copied before the hot region was done: the order was not followed"
	[ $rc = 4 ] || fail "exit $rc after Ctrl-C, wanted 4: $(tail -3 $W/out)"
	running
}
check "the bulk pass follows the daemon's heat map (foresight heat → migrate --order): the hot regions first" heat_order

interrupted() {
	fill_small || return 1
	serve $DST2 || return 1
	foresight migrate fs1 $URI --json --bandwidth 2M >$W/events 2>$W/out &
	local pid=$! rc=0
	copying $pid
	sleep 1
	kill -INT $pid
	wait $pid || rc=$?
	unserve
	[ $rc = 4 ] || fail "exit $rc, wanted 4: $(tail -3 $W/out)"
	running
	# The copied part was discarded (null_blk reads discarded blocks as zeroes).
	[ "$(dd if=$DST2 bs=1M count=1 iflag=direct status=none | tr -d '\0' | wc -c)" = 0 ] ||
		fail "the destination still holds the copied data"
}
check "Ctrl-C mid-copy: exit 4, the source runs on, the copy on the destination discarded" interrupted

# at_ready WHAT: a migration paused at ready (sources suspended), then WHAT.
at_ready() {
	fill_small || return 1
	serve $DST2 || return 1
	rm -f $W/in
	mkfifo $W/in
	foresight migrate fs1 $URI --json --pause-before-switchover <$W/in >$W/events 2>$W/err &
	local pid=$! rc=0 i
	exec 8>$W/in
	for i in $(seq 1 600); do
		grep -q '"event":"ready"' $W/events && break
		kill -0 $pid 2>/dev/null || break
		sleep 0.1
	done
	grep -q '"event":"ready"' $W/events || { fail "never ready: $(tail -3 $W/err)"; exec 8>&-; return; }
	[ "$(state fs1)" = SUSPENDED ] || fail "at ready fs1 is $(state fs1)"
	case $1 in
	abort) echo abort >&8 ;;
	kill) kill -9 $pid ;;
	continue) echo continue >&8 ;;
	esac
	exec 8>&-
	wait $pid || rc=$?
	# Aborted or killed: the guard resumes fs1 (give it time).  Committed:
	# fs1 stays suspended, nothing to wait for.
	if [ $1 != continue ]; then
		for i in $(seq 1 100); do
			[ "$(state fs1)" = ACTIVE ] && break
			sleep 0.1
		done
	fi
	echo $rc >$W/rc
}

ready_abort() {
	at_ready abort || return 1
	[ "$(cat $W/rc)" = 4 ] || fail "exit $(cat $W/rc), wanted 4: $(tail -3 $W/err)"
	unserve
	running
}
check "abort at ready: exit 4, the sources resumed" ready_abort

ready_killed() {
	at_ready kill || return 1
	unserve
	[ "$(cat $W/rc)" = 137 ] || fail "exit $(cat $W/rc)"
	running
	grep -q 'migrate-guard.*resumed fs1' $W/err || fail "the guard did not say it resumed fs1: $(tail -3 $W/err)"
}
check "the tool killed (SIGKILL) while the sources are suspended: the guard resumes them, ownership is released" ready_killed

ready_continue() {
	at_ready continue || return 1
	unserve
	[ "$(cat $W/rc)" = 0 ] || fail "exit $(cat $W/rc): $(tail -3 $W/err)"
	sleep 2
	[ "$(state fs1)" = SUSPENDED ] || fail "committed, yet fs1 is $(state fs1): the guard resumed it"
	dm resume fs1
	dcmp /dev/mapper/fs1 $DST2 || fail "the destination differs"
}
check "continue at ready commits: the sources stay suspended (the guard does not resume them)" ready_continue

second_tool() {
	fill || return 1
	serve $DST || return 1
	foresight migrate fs0 $URI --json --bandwidth 16M --switchover-cmd $W/at-switchover >$W/events 2>$W/out &
	local pid=$! rc=0
	copying $pid
	foresight dirty rotate fs0 >$W/rot 2>&1 && fail "a second tool rotated fs0 during the migration"
	wait $pid || rc=$?
	unserve
	dm resume fs0
	[ $rc = 0 ] || fail "the migration failed (exit $rc): $(tail -3 $W/out)"
	[ "$(cat $W/cmp)" = same ] || fail "the destination differs"
	note "second tool: $(head -1 $W/rot)"
}
check "a second tool's rotate is refused during a migration, which completes" second_tool

dm remove fs0
dm remove fs1
dm remove dsterr
nullb_remove msrc
nullb_remove mdst
nullb_remove msrc2
nullb_remove mdst2
nullb_remove msrc3
ktap_end
