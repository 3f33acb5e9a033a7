#!/usr/bin/env bash
# Epochs a copy tool cannot lose: a rotate that names the epoch it expects,
# the epoch number in every extent dump, one socket owning a device's
# rotation (others refused unless they force it) until it closes, across
# table reloads; racing rotates while writes go on.
. "$(dirname "$0")/../lib.sh"
ktap_begin "epochs"

REPO=$(cd "$(dirname "$0")/../.." && pwd)
NLRAW=$REPO/qemu-test/nl-raw
ORIGIN=/dev/ram0
SIZE=$(sectors $ORIGIN)
W=/tmp/fs-epochs
mkdir -p $W

dm create ep0 --table "0 $SIZE foresight $ORIGIN 0 4 level 100 adaptive 0" || exit 1
dmesg_mark
epoch() { st ep0 12; }
rot() { "$NLRAW" --rotate ep0 "$@"; }

conditional() {
	local n m
	n=$(dm message ep0 0 dirty rotate) || return 1
	m=$(dm message ep0 0 dirty rotate "$n") || fail "rotate expecting the current epoch refused"
	[ "$m" = $((n + 1)) ] || fail "rotate $n gave epoch $m"
	dm message ep0 0 dirty rotate "$n" 2>$W/err && fail "rotate expecting an old epoch succeeded"
	dmesg_since | grep -q 'the log has moved on' || fail "no reason logged: $(dmesg_since | tail -3)"
	[ "$(epoch)" = "$m" ] || fail "a refused rotate moved the epoch: $(epoch)"
	# Over netlink: ESTALE, with the reason.
	rot rotate:expect="$n" >$W/out || return 1
	grep -q '^rotate ESTALE the log has moved on' $W/out || fail "$(cat $W/out)"
	rot rotate:expect="$m" >$W/out || return 1
	grep -qx "rotate OK $((m + 1))" $W/out || fail "$(cat $W/out)"
	# Every extent dump names its epoch.
	dd if=/dev/zero of=/dev/mapper/ep0 bs=4k count=1 oflag=direct status=none
	extents ep0 cur $W/cur
	head -1 $W/cur | grep -qx "epoch $((m + 1)) tracked" || fail "message dump header: $(head -1 $W/cur)"
	extents ep0 prev $W/prev
	head -1 $W/prev | grep -q "^epoch $m " || fail "previous dump header: $(head -1 $W/prev)"
	foresight dirty dump ep0 --json >$W/dump.json || return 1
	jq -e --argjson e $((m + 1)) '.epoch == $e and (.extents | length) == 1' $W/dump.json ||
		fail "netlink dump: $(cat $W/dump.json)"
	# Garbage is refused.
	for bad in "x" "1 2" "force 1" "1 force x" "-1"; do
		# shellcheck disable=SC2086
		dm message ep0 0 dirty rotate $bad 2>/dev/null && fail "dirty rotate $bad accepted"
	done
	[ "$(epoch)" = $((m + 1)) ] || fail "garbage moved the epoch"
}
check "a rotate naming an old epoch is refused (ESTALE, both interfaces); dumps carry the epoch number" conditional

# owner_start STEPS...: a socket that runs STEPS and then holds on.
owner_start() {
	rm -f $W/owner
	# Not through `rot`: $! must be the process that holds the socket.
	"$NLRAW" --rotate ep0 "$@" hold >$W/owner 2>&1 &
	OWNER=$!
	local i
	for i in $(seq 100); do
		grep -q holding $W/owner && return 0
		sleep 0.1
	done
	fail "owner did not start: $(cat $W/owner)"
}

ownership() {
	local port n
	writer_bg /dev/mapper/ep0 64k 16 10 # writes while the epochs turn
	owner_start rotate:claim rotate port owner || { writer_end; return 1; }
	port=$(awk '$1 == "port" {print $2}' $W/owner)
	grep -qx "owner $port" $W/owner || fail "the claim did not take: $(cat $W/owner)"
	[ "$(grep -c '^rotate OK' $W/owner)" = 2 ] || fail "the owner's rotates: $(cat $W/owner)"
	rot owner | grep -qx "owner $port" || fail "dev-get owner: $(rot owner)"
	n=$(epoch)
	# Everyone else is refused, with the reason.
	rot rotate >$W/out
	grep -q '^rotate EBUSY another copy tool owns' $W/out || fail "netlink: $(cat $W/out)"
	rot rotate:claim >$W/out
	grep -q '^rotate EBUSY' $W/out || fail "second claim: $(cat $W/out)"
	dm message ep0 0 dirty rotate 2>/dev/null && fail "dmsetup rotate while owned"
	foresight dirty rotate ep0 >$W/out 2>&1 && fail "tool rotate while owned"
	grep -q 'another copy tool owns' $W/out || fail "tool: $(cat $W/out)"
	[ "$(epoch)" = "$n" ] || fail "a refused rotate moved the epoch"
	# Forcing rotates and leaves the owner.
	dm message ep0 0 dirty rotate force >/dev/null || fail "forced dmsetup rotate refused"
	foresight dirty rotate ep0 --force >/dev/null || fail "forced tool rotate refused"
	[ "$(epoch)" = $((n + 2)) ] || fail "forced rotates: epoch $(epoch), expected $((n + 2))"
	rot owner | grep -qx "owner $port" || fail "force took ownership: $(rot owner)"
	# Ownership stays across a table reload.
	dm table ep0 >$W/table
	dm reload ep0 $W/table && dm resume ep0 || fail "reload"
	rot owner | grep -qx "owner $port" || fail "after a reload: $(rot owner)"
	rot rotate | grep -q '^rotate EBUSY' || fail "after a reload, others may rotate"
	# The owner dies: its socket closes, and ownership goes with it.
	kill -9 $OWNER
	wait $OWNER 2>/dev/null
	rot owner | grep -qx "owner none" || fail "after the owner died: $(rot owner)"
	rot rotate | grep -q '^rotate OK' || fail "rotate after the owner died refused"
	# A claim taken over by force; released when that socket closes.
	owner_start rotate:claim || { writer_end; return 1; }
	rot rotate:claim:force port owner >$W/out
	port=$(awk '$1 == "port" {print $2}' $W/out)
	grep -qx "owner $port" $W/out || fail "takeover: $(cat $W/out)"
	rot owner | grep -qx "owner none" || fail "after the new owner exited: $(rot owner)"
	kill -9 $OWNER
	wait $OWNER 2>/dev/null
	writer_end
}
check "one socket owns the rotation: others get EBUSY unless forced; kept across a reload; released when its socket closes" ownership

races() {
	local i n ok pa pb
	writer_bg /dev/mapper/ep0 64k 16 10 # writes while the epochs turn
	# Each round starts two python processes per race under emulation
	# (seconds each): four rounds.
	for i in $(seq 4); do
		n=$(epoch)
		rot rotate:expect="$n" >$W/a &
		pa=$!
		rot rotate:expect="$n" >$W/b &
		pb=$!
		wait $pa $pb
		ok=$(cat $W/a $W/b | grep -c '^rotate OK')
		[ "$ok" = 1 ] || fail "round $i: $ok of 2 rotates expecting epoch $n succeeded: $(cat $W/a $W/b)"
		cat $W/a $W/b | grep -q "^rotate ESTALE" || fail "round $i: the loser: $(cat $W/a $W/b)"
		# Two claimants: each wins or is refused as busy (the second wins
		# only once the first has exited).
		rot rotate:claim >$W/a &
		pa=$!
		rot rotate:claim >$W/b &
		pb=$!
		wait $pa $pb
		grep -qv '^rotate \(OK\|EBUSY\)' $W/a $W/b && fail "round $i: claims: $(cat $W/a $W/b)"
		grep -q '^rotate OK' $W/a $W/b || fail "round $i: no claim succeeded: $(cat $W/a $W/b)"
	done
	writer_end
	rot owner | grep -qx "owner none" || fail "claimants gone, owner left: $(rot owner)"
}
check "racing rotates that expect the same epoch: exactly one wins, the other gets ESTALE" races

dm remove ep0

# in_flight: writes held in flight (dm-delay delays writes 4 s, not reads)
# while epochs turn.  A write is logged when it completes: one acknowledged
# before a rotation is in the frozen epoch; one in flight through the
# rotation (the device's in-flight count says so, before and after) lands in
# the epoch current when it completes, even after two rotations (the epoch
# it was submitted in is gone by then).
CHECK=$REPO/qemu-test/dirty-check
# inflight_writes DEV: writes in flight on a mapped device.
inflight_writes() { awk '{print $2}' "/sys/block/$(basename "$(readlink -f "/dev/mapper/$1")")/inflight"; }
# hold N BLOCK...: one 4 KiB direct write per block in the background, then
# waits until N are in flight.
hold() {
	local n=$1 b i
	shift
	: >$W/during
	for b in "$@"; do
		dd if=/dev/urandom of=/dev/mapper/epd bs=4k count=1 seek="$b" oflag=direct status=none &
		echo "$((b * 4096)) 4096" >>$W/during
	done
	for i in $(seq 100); do
		[ "$(inflight_writes epd)" -ge "$n" ] && return 0
		sleep 0.05
	done
	fail "writes never in flight: $(inflight_writes epd)"
}
# in_flight_once DELAY_MS [feature words, counted]: the case with writes
# delayed DELAY_MS; returns 2 (nothing checked) if the writes completed
# before a rotation could run (a slow guest: KASAN under emulation).
in_flight_once() {
	local n delay=$1
	shift
	dm create slow --table "0 $SIZE delay $ORIGIN 0 0 $ORIGIN 0 $delay" || return 1
	dm create epd --table "0 $SIZE foresight /dev/mapper/slow ${1:-0} 4 level 100 adaptive 0" || return 1
	dm message epd 0 dirty rotate >/dev/null || return 1
	dd if=/dev/urandom of=/dev/mapper/epd bs=4k count=1 seek=10 oflag=direct status=none
	echo "40960 4096" >$W/before
	hold 8 100 300 500 700 900 1100 1300 1500 || return 1
	n=$(dm message epd 0 dirty rotate) || return 1
	if [ "$(inflight_writes epd)" != 8 ]; then
		wait
		dm remove epd
		dm remove slow
		return 2
	fi
	wait
	extents epd prev $W/prev
	extents epd cur $W/cur
	head -1 $W/prev | grep -q "^epoch $((n - 1)) tracked" || fail "frozen: $(head -1 $W/prev)"
	$CHECK $W/before $W/prev || fail "the write acknowledged before the rotation is not in the frozen epoch"
	[ "$(wc -l <$W/prev)" = 2 ] || fail "the frozen epoch holds writes completed after it: $(cat $W/prev)"
	note "in flight across a rotation: $($CHECK $W/during $W/cur)"
	$CHECK $W/during $W/cur || fail "writes in flight across the rotation missing from the new epoch"
	# Two rotations while writes are in flight.
	hold 4 2000 2200 2400 2600 || return 1
	dm message epd 0 dirty rotate >/dev/null && n=$(dm message epd 0 dirty rotate) || return 1
	if [ "$(inflight_writes epd)" != 4 ]; then
		wait
		dm remove epd
		dm remove slow
		return 2
	fi
	wait
	extents epd cur $W/cur
	head -1 $W/cur | grep -q "^epoch $n tracked" || fail "current: $(head -1 $W/cur)"
	note "in flight across two rotations: $($CHECK $W/during $W/cur)"
	$CHECK $W/during $W/cur || fail "writes in flight across two rotations lost"
	dm remove epd
	dm remove slow
}
# in_flight [feature words, counted]: the case with writes delayed 4 s, or
# longer where the guest is too slow for the rotations to run while they
# are in flight (the in-flight counts before and after say which).
in_flight() {
	local delay rc
	for delay in 4000 16000 60000; do
		in_flight_once $delay "$@"
		rc=$?
		[ $rc = 2 ] || return $rc
		note "writes completed before the rotations with a ${delay} ms delay: longer"
	done
	fail "writes completed before the rotations even with a 60 s delay"
}
check "writes in flight across rotations (dm-delay): each lands in the epoch current when it completes, none lost" in_flight
check "buffered_log: writes in flight across rotations (dm-delay): each lands in the epoch current when it completes" in_flight "1 buffered_log"

check "no kernel warnings" dmesg_clean
ktap_end
