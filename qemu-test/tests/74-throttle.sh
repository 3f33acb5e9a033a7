#!/usr/bin/env bash
# The write throttle (write_kbps): writes over the limit wait, in order, and
# lose nothing; a suspend (a switchover) never waits on the limit; lifting
# it lets everything go; `foresight migrate --on-stall throttle` slows a
# writer the rounds cannot catch, and lifts the limit at the end.
. "$(dirname "$0")/../lib.sh"
ktap_begin "write throttle"

W=/tmp/fs-throttle
mkdir -p $W
ORIGIN=$(nullb thr 64 memory_backed=1) || exit 1
SIZE=$(sectors $ORIGIN)

# tw FIELD: the device's throttle counters, from netlink.
tw() { foresight status t0 --json | jq ".[0].$1"; }

# wait_waiting: until writes wait in the throttle (at most 10 s).
wait_waiting() {
	local i
	for i in $(seq 1 100); do
		[ "$(tw write_waiting)" -gt 0 ] && return 0
		sleep 0.1
	done
	fail "no write waits: $(foresight status t0 --json | jq -c '.[0] | {write_kbps, write_delayed, write_waiting}')"
}

setup() {
	dm create t0 --table "0 $SIZE foresight $ORIGIN 0" || return 1
	udevadm settle
	pattern $W/data 4096 throttled || return 1 # 4 MiB
}

limits_and_keeps_order() {
	setup || return 1
	dm message t0 0 write_kbps 256
	[ "$(tw write_kbps)" = 256 ] || fail "write_kbps $(tw write_kbps)"
	# 4 MiB of 64 KiB writes at 256 KiB/s: the first second's burst goes,
	# the rest waits its turn.
	dd if=$W/data of=/dev/mapper/t0 bs=64k oflag=direct status=none &
	local writer=$!
	wait_waiting
	note "waiting: $(tw write_waiting) writes, held back so far: $(tw write_delayed)"
	# Lifted: all of it goes at once.
	foresight policy set t0 --write-kbps 0
	wait $writer || fail "the writes failed"
	[ "$(tw write_waiting)" = 0 ] || fail "$(tw write_waiting) writes still wait"
	[ "$(tw write_delayed)" -gt 0 ] || fail "nothing was held back"
	cmp -s <(dd if=/dev/mapper/t0 bs=1M count=4 iflag=direct status=none) $W/data ||
		fail "data differs after the throttle"
	dm remove t0
}
check "writes over write_kbps wait and land, in order; lifting the limit lets them go" limits_and_keeps_order

suspend_does_not_wait() {
	setup || return 1
	dm message t0 0 write_kbps 64
	dd if=$W/data of=/dev/mapper/t0 bs=64k oflag=direct status=none &
	local writer=$!
	wait_waiting
	# At 64 KiB/s what waits needs a minute; suspend lets it through.
	local t0=$SECONDS
	timeout 30 dmsetup suspend t0 || fail "suspend did not complete in 30 s"
	note "suspend with $((4096 / 64 - 1)) writes behind the limit took $((SECONDS - t0)) s"
	[ "$(tw write_waiting)" = 0 ] || fail "writes wait in a suspended device"
	dmsetup resume t0
	# Resumed: the limit applies again to what comes.
	[ "$(tw write_kbps)" = 64 ] || fail "write_kbps $(tw write_kbps) after resume"
	foresight policy set t0 --write-kbps 0
	wait $writer || fail "the writes failed"
	cmp -s <(dd if=/dev/mapper/t0 bs=1M count=4 iflag=direct status=none) $W/data ||
		fail "data differs after suspend"
	dm remove t0
}
check "a suspend never waits on the limit: waiting writes go, the limit holds again after resume" suspend_does_not_wait

# The origin slow on writes (dm-delay, 200 ms): throttled writes are in
# flight at the origin when the device suspends and its table is reloaded.
# 64 KiB writes one at a time reach the origin at most every 200 ms
# (320 KiB/s); the limit, 64 KiB/s, holds each back about a second.
reload_with_writes_in_flight() {
	dm create tslow --table "0 $SIZE delay $ORIGIN 0 0 $ORIGIN 0 200" || return 1
	dm create t0 --table "0 $SIZE foresight /dev/mapper/tslow 0" || return 1
	udevadm settle
	pattern $W/data1 1024 reloaded || return 1 # 1 MiB
	dm message t0 0 write_kbps 64
	dd if=$W/data1 of=/dev/mapper/t0 bs=64k oflag=direct status=none &
	local writer=$!
	wait_waiting
	dmsetup suspend t0 || fail "suspend"
	dmsetup reload t0 --table "0 $SIZE foresight /dev/mapper/tslow 0" || fail "reload"
	dmsetup resume t0 || fail "resume"
	wait $writer || fail "the writes failed"
	cmp -s <(dd if=/dev/mapper/t0 bs=1M count=1 iflag=direct status=none) $W/data1 ||
		fail "data differs after the reload"
	dm remove t0
	dm remove tslow
}
check "throttled writes across a suspend and table reload, the origin slow on writes (dm-delay): none lost" reload_with_writes_in_flight

messages_refused() {
	setup || return 1
	dm message t0 0 write_kbps 2>/dev/null && fail "write_kbps without a value accepted"
	dm message t0 0 write_kbps -5 2>/dev/null && fail "write_kbps -5 accepted"
	dm message t0 0 write_kbps 99999999999 2>/dev/null && fail "write_kbps 99999999999 accepted"
	[ "$(tw write_kbps)" = 0 ] || fail "a refused message changed the limit"
	dm remove t0
}
check "bad write_kbps messages are refused" messages_refused

nullb_remove thr
ktap_end
