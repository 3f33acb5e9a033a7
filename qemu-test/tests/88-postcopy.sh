#!/usr/bin/env bash
# `foresight migrate --postcopy`, end to end on one guest standing for two
# hosts: a foresight source under a writer is pre-copied to an NBD export
# (qemu-storage-daemon on the "destination host") for a few seconds, then
# switched over early: the tool exports the source's origin read-only over
# NBD and writes the handoff; the destination becomes a foreshadow target
# over its disk and the source's export (nbd-client), seeded from the
# handoff (what the pre-copy sent and was not written since) while the VM
# already uses it, ranked by the heat map, and pulls the rest while a
# writer uses it.  The data is the
# source's at the switchover plus the destination's writes; the regions
# the handoff marks are not fetched again.
. "$(dirname "$0")/../lib.sh"
ktap_begin "foresight migrate --postcopy"

REPO=$(cd "$(dirname "$0")/../.." && pwd)
STAMP=$REPO/qemu-test/stamp
W=/tmp/fs-postcopy
rm -rf $W
mkdir -p $W
ip link set lo up
modprobe nbd 2>/dev/null
MB=64
DPORT=10809 # the destination's disk, for the pre-copy
SPORT=10810 # the source, for the post-copy
REGION=128  # 64 KiB regions
NBD=nbd4    # one no other script uses

SRC=$(nullb pcsrc $MB memory_backed=1 discard=1) || exit 1
DST=$(nullb pcdst $MB memory_backed=1 discard=1) || exit 1
META=$(nullb pcmeta 4 memory_backed=1) || exit 1
SZ=$(sectors $SRC)
REGIONS=$((SZ / REGION))
dm create pc0 --table "0 $SZ foresight $SRC 0" || exit 1

pattern $W/pat $((MB * 1024)) postcopy-source || exit 1
pattern $W/junk $((MB * 1024)) postcopy-junk || exit 1

sf() { st pcs "$1"; }
marked() { sf 11; }

# A writer on the source: random 4 KiB blocks, until its device is
# suspended (then it waits in its write) and killed.
writer() {
	local i=0
	while :; do
		dd if=/dev/urandom of=/dev/mapper/pc0 bs=4k seek=$(((RANDOM * 7 + i) % (MB * 256))) count=1 \
			oflag=direct conv=notrunc status=none || break
		i=$((i + 1))
	done
}

# start_migration ARGS...: the source filled, the destination's disk
# garbage and exported, a writer on the source, the migration in the
# background ($MIG) with --json events in $W/events.
start_migration() {
	dd if=$W/pat of=/dev/mapper/pc0 bs=1M oflag=direct status=none || return 1
	dd if=$W/junk of=$DST bs=1M oflag=direct status=none || return 1
	nbd_serve $DST $DPORT || return 1
	writer &
	WRITER=$!
	sleep 1
	foresight migrate pc0 nbd://127.0.0.1:$DPORT/disk --postcopy --json "$@" >$W/events 2>$W/err &
	MIG=$!
}

# end_source: the source resumed (the writer's last write lands on it:
# nothing reads the source any more), the writer ended.
end_source() {
	dm resume pc0 2>/dev/null
	kill $WRITER 2>/dev/null
	wait $WRITER 2>/dev/null
	true
}

serving() { grep -q '"event":"serving"' $W/events; }
ev() { grep "\"event\":\"$1\"" $W/events; }

exported() { grep -q '"event":"exported"' $W/events; }

# The destination side, as the guide's procedure has it: at `exported`
# (the source still runs and changes) connect the source and load the
# shadow table without resuming it: nothing can read it, so no region is
# copied from data the source may still change.  `shadow seed --wait
# --resume`, started then, resumes it the moment the handoff is written
# (the VM may run from then on) and seeds it while a writer and readers
# use the device; the hint follows.
e2e() {
	# The heat map: the last quarter first.
	echo "$((SZ * 3 / 4)) $((SZ / 4)) 1.0" >$W/order
	start_migration --postcopy-after 3 --bandwidth 8M --order $W/order \
		--serve 127.0.0.1:$SPORT --handoff $W/handoff || return 1
	poll 60 exported || { fail "no post-copy export: $(tail -3 $W/err)"; return 1; }
	nbd-client 127.0.0.1 $SPORT /dev/$NBD -N pc0 -readonly -timeout 5 >$W/nbd.log 2>&1 ||
		{ fail "nbd-client: $(cat $W/nbd.log)"; return 1; }
	dd if=/dev/zero of=$META bs=1M count=4 oflag=direct status=none
	dmsetup create pcs --notable && dmsetup load pcs --table \
		"0 $SZ foreshadow $META $DST /dev/$NBD $REGION 1 no_hydration 2 bandwidth_kbps 4096" ||
		{ fail "cannot load the shadow"; return 1; }
	foresight shadow seed pcs $W/handoff --wait --resume --start --json >$W/seed.json 2>$W/seed &
	local seeder=$!
	sleep 1
	# Live only once the handoff exists (it is written before the resume).
	local live=$(dmsetup table pcs)
	[ -n "$live" ] && [ ! -e $W/handoff ] && fail "resumed before the handoff: $live"
	poll 60 serving || { fail "no handoff: $(tail -3 $W/err)"; return 1; }
	[ "$(dmsetup info pc0 | awk '/^State:/ {print $2}')" = SUSPENDED ] || fail "the source is not suspended"
	# The source as the switchover left it (its origin does not change any more).
	dd if=$SRC of=$W/final bs=1M iflag=direct status=none
	cmp -s $W/final $W/pat && fail "the writer changed nothing on the source"
	local i
	for i in $(seq 1 100); do
		[ "$(dmsetup info pcs | awk '/^State:/ {print $2}')" = ACTIVE ] && [ -n "$(dmsetup table pcs)" ] && break
		sleep 0.1
	done
	[ -n "$(dmsetup table pcs)" ] || { fail "seed --wait --resume did not resume: $(cat $W/seed)"; return 1; }
	# The destination host's pre-copy export ends.
	nbd_unserve
	# While the VM runs: a writer on 4 MiB at 48 MiB, readers of the rest
	# (missing regions from the source over NBD), the hint and the seed.
	local first=$((48 * 256)) count=1024
	local a=$((first * 4096)) b=$(((first + count) * 4096))
	"$STAMP" fill /dev/mapper/pcs $first $count $W/journal >/dev/null || fail "stamp fill"
	"$STAMP" run /dev/mapper/pcs $first $count 4 $W/journal 2 1 >$W/run &
	local run=$!
	(cmp -n $a <(dd if=/dev/mapper/pcs bs=1M iflag=direct status=none) $W/final) >$W/cmp1 2>&1 &
	local r1=$!
	(cmp -i $b <(dd if=/dev/mapper/pcs bs=1M iflag=direct status=none) $W/final) >$W/cmp2 2>&1 &
	local r2=$!
	foresight shadow hint pcs $W/order 2>/dev/null || fail "hint"
	wait $seeder || fail "seed: $(cat $W/seed)"
	dm table pcs | grep -q no_hydration && fail "seed --start left hydration off: $(dm table pcs)"
	# Handoff written (the source's report) -> seen -> resumed -> marked.
	local resume_ms seed_ms
	read -r resume_ms seed_ms < <(python3 -c '
import json, sys
r = json.loads(sys.argv[1]); s = json.load(open(sys.argv[2]))
handoff = r["suspend_unix_ms"] + r["commit_ms"]
print("%.0f %.0f" % (s["resumed_unix_ms"] - handoff, s["marked_unix_ms"] - s["resumed_unix_ms"]))' "$(ev done)" $W/seed.json) ||
		fail "no times: $(cat $W/seed.json)"
	wait $r1 || fail "read before the stamps while seeding: not the source's data at the switchover: $(cat $W/cmp1)"
	wait $r2 || fail "read after the stamps while seeding: not the source's data at the switchover: $(cat $W/cmp2)"
	wait $run || fail "stamped run: $(cat $W/run)"
	local m=$(marked)
	local copied=$(ev bulk | python3 -c 'import json,sys; print(json.load(sys.stdin)["bytes"])')
	local cur=$(ev done | python3 -c 'import json,sys; print(json.load(sys.stdin)["current_bytes"])')
	[ "$m" -gt 0 ] || fail "nothing marked: $(cat $W/seed)"
	# Marked: the whole regions of what is current, no more.
	[ $((m * REGION * 512)) -le "$cur" ] || fail "$m regions marked, more than the $cur bytes current"
	[ "$cur" -lt "$copied" ] || fail "current $cur of $copied copied: the source's writes were not taken off"
	foresight shadow wait pcs --json --timeout-s 120 >$W/wait.json || fail "not hydrated: $(cat $W/wait.json)"
	"$STAMP" check /dev/mapper/pcs $first $count $W/journal >$W/check || fail "stamps: $(cat $W/check)"
	# Outside the writer's range: the source's data at the switchover.
	cmp -n $a <(dd if=/dev/mapper/pcs bs=1M iflag=direct status=none) $W/final || fail "before the stamps: differs"
	cmp -i $b <(dd if=/dev/mapper/pcs bs=1M iflag=direct status=none) $W/final || fail "after the stamps: differs"
	local kib=$(sf 14)
	# Fetched: no more than the regions not marked (each at most once, bar refetches).
	[ $((kib * 1024)) -le $(((REGIONS - m) * REGION * 512)) ] ||
		fail "fetched $kib KiB, more than the $((REGIONS - m)) regions not marked"
	kill -TERM $MIG
	wait $MIG || fail "migrate ended with $? after SIGTERM"
	ev served >/dev/null || fail "no served event"
	nbd-client -d /dev/$NBD >/dev/null 2>&1
	dm remove pcs
	end_source
	note "$(ev done | python3 -c 'import json,sys; r=json.load(sys.stdin); print("switched over after %.1f s: %d MiB of %d copied, %d MiB current; the source suspended to handoff written %.0f ms" % (r["seconds"], '"$copied"'>>20, r["bytes"]>>20, r["current_bytes"]>>20, r["downtime_ms"]))'); destination: resumed $resume_ms ms after the handoff was written (seed --wait --resume), its marks done $seed_ms ms later while used, $m of $REGIONS regions marked, $kib KiB fetched; $(head -1 $W/run)"
}
check "post-copy under writers: switched over after 3 s of bulk pass; the destination, loaded before the switchover and resumed after, reads the source's data at the switchover while it is seeded and hydrates, keeps its own writes, and fetches only what the handoff did not mark" e2e

# The export cannot start (its port taken): the migration aborts before
# the handoff exists, the source runs on.
port_taken() {
	nbd_serve $META $SPORT ro || return 1
	local QSD2=$QSD
	start_migration --serve 127.0.0.1:$SPORT --handoff $W/handoff2 || return 1
	local rc=0
	wait $MIG || rc=$?
	kill $QSD2 2>/dev/null
	wait $QSD2 2>/dev/null
	nbd_unserve
	[ $rc = 1 ] || fail "exit $rc: $(tail -3 $W/err)"
	grep -q "could not export\|does not accept" $W/err || fail "why: $(tail -3 $W/err)"
	[ ! -e $W/handoff2 ] || fail "a handoff was written"
	[ "$(dmsetup info pc0 | awk '/^State:/ {print $2}')" = ACTIVE ] || fail "the source is not running"
	dd if=/dev/zero of=/dev/mapper/pc0 bs=4k count=1 oflag=direct status=none || fail "the source takes no write"
	end_source
}
check "the post-copy export cannot start: the migration fails before any handoff, the source runs on" port_taken

dm remove pc0
ktap_end
