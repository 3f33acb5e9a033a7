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

# Writes in the background while epochs turn.
writer_start() {
	(while :; do
		dd if=/dev/urandom of=/dev/mapper/ep0 bs=4k count=16 seek=$((RANDOM % 4096)) oflag=direct status=none
	done) &
	WRITER=$!
}
writer_stop() {
	kill $WRITER 2>/dev/null
	wait $WRITER 2>/dev/null
	return 0
}

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
	writer_start
	owner_start rotate:claim rotate port owner || { writer_stop; return 1; }
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
	owner_start rotate:claim || { writer_stop; return 1; }
	rot rotate:claim:force port owner >$W/out
	port=$(awk '$1 == "port" {print $2}' $W/out)
	grep -qx "owner $port" $W/out || fail "takeover: $(cat $W/out)"
	rot owner | grep -qx "owner none" || fail "after the new owner exited: $(rot owner)"
	kill -9 $OWNER
	wait $OWNER 2>/dev/null
	writer_stop
}
check "one socket owns the rotation: others get EBUSY unless forced; kept across a reload; released when its socket closes" ownership

races() {
	local i n ok pa pb
	writer_start
	for i in $(seq 10); do
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
	writer_stop
	rot owner | grep -qx "owner none" || fail "claimants gone, owner left: $(rot owner)"
}
check "racing rotates that expect the same epoch: exactly one wins, the other gets ESTALE" races

dm remove ep0
check "no kernel warnings" dmesg_clean
ktap_end
