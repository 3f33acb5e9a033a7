#!/usr/bin/env bash
# foreshadow: a destination usable at once while it is hydrated from
# its source.  Reads of missing regions come from the source and make them
# urgent; writes wait for their region or overwrite it whole; the data is
# the source's plus the writes, under concurrent I/O; predicted ranges go
# first; the hydrated bitmap survives a reload and is on the metadata
# device before a flush completes; a failing source fails only the reads
# that need it and marks nothing.
. "$(dirname "$0")/../lib.sh"
ktap_begin "foreshadow: a destination hydrated from its source"

W=/tmp/fs-shadow
mkdir -p $W
MB=32
SRC=$(nullb shsrc $MB memory_backed=1) || exit 1
DST=$(nullb shdst $MB memory_backed=1) || exit 1
META=$(nullb shmeta 4 memory_backed=1) || exit 1
SMALL=$(nullb shsmall 8 memory_backed=1) || exit 1
SIZE=$(sectors $SRC)
# 64 KiB regions: 512 of them.
REGION=128
REGIONS=$((SIZE / REGION))

pattern $W/src $((MB * 1024)) shadow-source || exit 1
dd if=$W/src of=$SRC bs=1M oflag=direct status=none

# Status fields (as awk counts them; see foreshadow.rst).
sf() { st sh0 "$1"; }
hydrated() { sf 5 | cut -d/ -f1; }
mode() { sf 21; }

fresh() {
	dd if=/dev/zero of=$META bs=1M count=4 oflag=direct status=none
	dd if=/dev/zero of=$DST bs=1M count=$MB oflag=direct status=none
}

# create [SOURCE] [ARGS...]: sh0 over the metadata, destination and SOURCE.
create() {
	local src=${1:-$SRC}
	shift
	dm create sh0 --table "0 $SIZE foreshadow $META $DST $src $REGION $*"
}

teardown() {
	for d in shf sh0 shslow shbad; do
		dm remove $d 2>/dev/null
	done
	true
}

# wait_mode MODE SECONDS
mode_is() { [ "$(mode)" = "$1" ]; }
wait_mode() { poll $2 mode_is $1 || fail "mode $(mode), not $1 after $2 s: $(dm status sh0)"; }

# same DEV: DEV holds the source's data.
same() { cmp -n $((MB << 20)) "$1" $W/src; }

# region_of FILE_OR_DEV R: region R's bytes.
region_of() { dd if="$1" bs=64k skip="$2" count=1 iflag=direct status=none 2>/dev/null || dd if="$1" bs=64k skip="$2" count=1 status=none; }

refused() {
	teardown
	fresh
	local bad
	for bad in "$META $DST $SRC" "$META $DST $SRC 100" "$META $DST $SRC 4" \
		"$META $DST $SRC 128 1 fast" "$META $DST $SRC 128 0 2 inflight 99" \
		"$META $SMALL $SRC 128" "$META $DST $SMALL 128" "$SMALL $DST /dev/nonexistent 128"; do
		if dm create sh0 --table "0 $SIZE foreshadow $bad" 2>$W/err; then
			dm remove sh0
			fail "accepted: $bad"
		fi
	done
	# Metadata that is not ours is not overwritten.
	printf 'not a shadow superblock' | dd of=$META conv=notrunc status=none
	create && { dm remove sh0; fail "foreign metadata accepted"; }
	[ "$(head -c 5 $META)" = "not a" ] || fail "foreign metadata overwritten"
	fresh
	create || return 1
	# The table line is given back as it was given (devices as major:minor).
	dm remove sh0
	create "" 1 no_hydration 2 inflight 2 || return 1
	[ "$(dm table sh0 | cut -d' ' -f7-)" = "128 1 no_hydration 2 inflight 2" ] || fail "table: $(dm table sh0)"
	dm message sh0 0 grow 2>/dev/null && fail "message grow accepted"
	dm message sh0 0 hint 1 2 2>/dev/null && fail "short hint accepted"
	dm message sh0 0 set inflight 0 2>/dev/null && fail "inflight 0 accepted"
	# Batches shrink at run time, never grow (the copy buffers are sized).
	dm message sh0 0 set batch_regions 1 || fail "batch_regions 1 refused"
	dm message sh0 0 set batch_regions 8 2>/dev/null && fail "batch_regions grown at run time"
	dm table sh0 | grep -q "batch_regions 1" || fail "table: $(dm table sh0)"
	dm remove sh0
}

hydrates_everything() {
	teardown
	fresh
	create "" 1 no_hydration || return 1
	local ev0
	ev0=$(dmsetup info -c --noheadings -o events sh0)
	dm message sh0 0 hydration on || return 1
	foresight shadow wait sh0 --json --timeout-s 120 >$W/wait.json || fail "foresight shadow wait: exit $?"
	[ "$(jq -r '.state + " " + (.hydrated|tostring) + "/" + (.regions|tostring)' $W/wait.json)" = "complete $REGIONS/$REGIONS" ] ||
		fail "shadow wait said: $(cat $W/wait.json)"
	[ "$(sf 5)" = "$REGIONS/$REGIONS" ] || fail "hydrated $(sf 5)"
	# udev's probe of the new device reads a few regions: urgent ones.
	[ $(($(sf 7) + $(sf 9))) = "$REGIONS" ] || fail "urgent $(sf 7) + ascending $(sf 9), not $REGIONS"
	same $DST || fail "the destination differs from the source"
	same /dev/mapper/sh0 || fail "the device differs from the source"
	local ev
	ev=$(dmsetup info -c --noheadings -o events sh0)
	[ "$ev" -gt "$ev0" ] || fail "no dm event at completion ($ev0 -> $ev)"
	note "hydrated $REGIONS regions: $(dm status sh0)"
	dm remove sh0
}

reads_from_the_source_first() {
	teardown
	fresh
	create "" 1 no_hydration || return 1
	# Region 10, read: from the source, and then on the destination.
	region_of /dev/mapper/sh0 10 >$W/r10
	cmp $W/r10 <(region_of $W/src 10) || fail "region 10 read wrong data"
	[ "$(sf 13)" -ge 1 ] || fail "no read from the source: $(dm status sh0)"
	local i
	for i in $(seq 1 50); do
		[ "$(sf 7)" -ge 1 ] && break
		sleep 0.1
	done
	[ "$(sf 7)" -ge 1 ] || fail "region 10 not hydrated as urgent: $(dm status sh0)"
	cmp <(region_of $DST 10) <(region_of $W/src 10) || fail "region 10 not on the destination"
	# No background copy: a far region is still missing.
	cmp -s <(region_of $DST 300) <(region_of $W/src 300) && fail "region 300 copied with no_hydration"
	[ "$(mode)" = idle ] || fail "mode $(mode)"
	# Reads of a hydrated region go to the destination.
	local dest0
	dest0=$(sf 12)
	region_of /dev/mapper/sh0 10 >/dev/null
	[ "$(sf 12)" -gt "$dest0" ] || fail "a hydrated region read from the source"
	dm remove sh0
}

# The writes of the concurrent test: piece SEED COUNT_SECTORS makes one
# (before the device exists: generating data is slow under emulation);
# put OFFSET_SECTORS SEED writes it to the device and to $W/ref.
piece() {
	PIECES=$((${PIECES:-0} + 1))
	dd if=$W/pieces of=$W/piece.$1 bs=512 skip=$((PIECES * REGION)) count="$2" status=none
}
put() {
	local bytes
	bytes=$(stat -c %s $W/piece.$2)
	# One write of the whole piece (a single bio).
	dd if=$W/piece.$2 of=/dev/mapper/sh0 bs=$bytes count=1 seek=$(($1 * 512)) oflag=direct,seek_bytes status=none || return 1
	dd if=$W/piece.$2 of=$W/ref bs=512 seek="$1" conv=notrunc status=none
}

identity_under_io() {
	teardown
	fresh
	cp $W/src $W/ref
	pattern $W/pieces 4160 pieces || return 1
	local i
	for i in $(seq 1 24); do
		piece sub$i $((RANDOM % 15 + 1)) || return 1
	done
	for i in $(seq 1 12); do
		piece whole$i $REGION || return 1
	done
	# A slow source and a bandwidth limit (a minute for the device):
	# every kind of I/O lands while hydration runs.
	dm create shslow --table "0 $SIZE delay $SRC 0 2" || return 1
	create /dev/mapper/shslow 0 2 bandwidth_kbps 512 || return 1
	# Sub-region writes at 512-byte offsets and odd lengths (MiB 0-15).
	(
		for i in $(seq 1 24); do
			put $(((RANDOM % 16384) * 2 + 1)) sub$i || exit 1
		done
	) &
	local subs=$!
	# Whole-region writes (MiB 16-23), and a write-zeroes of a region.
	(
		for i in $(seq 1 12); do
			put $(((256 + RANDOM % 128) * REGION)) whole$i || exit 1
		done
	) &
	local wholes=$!
	# Reads of MiB 24-31, which nobody writes: always the source's data.
	local bad=0 r
	for i in $(seq 1 24); do
		r=$((384 + RANDOM % 128))
		cmp -s <(region_of /dev/mapper/sh0 $r) <(region_of $W/src $r) || bad=$((bad + 1))
	done
	wait $subs || fail "sub-region writes failed"
	wait $wholes || fail "whole-region writes failed"
	[ $bad = 0 ] || fail "$bad reads of untouched regions returned wrong data"
	blkdiscard -z -o $((300 * 65536)) -l 65536 /dev/mapper/sh0 || fail "write-zeroes failed"
	dd if=/dev/zero of=$W/ref bs=64k seek=300 count=1 conv=notrunc status=none
	note "during: $(dm status sh0)"
	dm message sh0 0 set bandwidth_kbps 0
	wait_mode complete 120 || return 1
	cmp -n $((MB << 20)) /dev/mapper/sh0 $W/ref || fail "the device differs from source + writes"
	cmp -n $((MB << 20)) $DST $W/ref || fail "the destination differs from source + writes"
	[ "$(sf 10)" -ge 1 ] || fail "no whole-region write hydrated its region: $(dm status sh0)"
	[ "$(sf 17)" = 0 ] || fail "copy errors: $(dm status sh0)"
	dm remove sh0
	dm remove shslow
}

predicted_first() {
	teardown
	fresh
	# Hydration starts once the hints are in (however slow the tool is to
	# start: under KASAN ascending copying had gone past 100 regions before).
	create "" 1 no_hydration 2 bandwidth_kbps 2048 || return 1
	# foresight heat's lines (sectors): regions 400-415, then 200-207.
	printf '# start_sector length_sectors probability\n51200 2048 0.9\n25600 1024 0.5\n' |
		foresight shadow hint sh0 || return 1
	[ "$(sf 20)" = 2 ] || fail "hints held: $(sf 20)"
	dm message sh0 0 hydration on || return 1
	note "at the hint: $(dm status sh0)"
	local i
	for i in $(seq 1 100); do
		[ "$(sf 8)" -ge 24 ] && break
		sleep 0.1
	done
	[ "$(sf 8)" -ge 24 ] || fail "predicted regions not copied: $(dm status sh0)"
	cmp <(region_of $DST 415) <(region_of $W/src 415) || fail "region 415 not copied"
	cmp <(region_of $DST 207) <(region_of $W/src 207) || fail "region 207 not copied"
	# Ascending copying had not got that far.
	[ "$(sf 9)" -lt 200 ] || fail "ascending copied $(sf 9) first"
	note "$(dm status sh0)"
	dm remove sh0
}

# over_netlink: shadow-get (foresight shadow status, foresight status)
# says what the status line says, by name and by number; shadow-hint
# replaces the hints; devices of the other target, unknown names, removed
# devices and unprivileged callers are refused.
over_netlink() {
	teardown
	fresh
	create "" 1 no_hydration || return 1
	dd if=/dev/mapper/sh0 of=/dev/null bs=64k count=3 iflag=direct status=none
	# Its three urgent copies done.
	sleep 1
	foresight shadow status sh0 --json >$W/nl.json || fail "shadow status: exit $?"
	local line
	line=$(dm status sh0)
	set -- $line
	jq -e --arg h "${5%/*}" --arg r "${5#*/}" --arg rs "$4" --arg u "$7" --arg rs2 "${13}" --arg st "${21}" \
		'(.hydrated|tostring) == $h and (.regions|tostring) == $r and (.region_sectors|tostring) == $rs
		 and (.urgent|tostring) == $u and (.reads_source|tostring) == $rs2 and .state == $st
		 and .name == "sh0" and .source != null' $W/nl.json >/dev/null ||
		fail "netlink $(cat $W/nl.json) vs status line: $line"
	local num
	num=$(dmsetup info -c --noheadings -o major,minor --separator : sh0 | tr -d ' ')
	foresight shadow status "$num" --json | jq -e '.name == "sh0"' >/dev/null || fail "by number $num"
	foresight status sh0 --json | jq -e 'length == 1 and .[0].target == "foreshadow" and .[0].name == "sh0"' >/dev/null ||
		fail "foresight status sh0: $(foresight status sh0 --json)"
	foresight status --json | jq -e 'map(select(.target == "foreshadow")) | length == 1' >/dev/null ||
		fail "foresight status: $(foresight status --json)"
	# Hints over netlink replace the last ones; a range past the end is ignored.
	printf '0 128 0.5\n1024 256 0.9\n' | foresight shadow hint sh0 2>/dev/null || fail "hint"
	[ "$(sf 20)" = 2 ] || fail "hints held: $(sf 20)"
	printf '%s 8 0.9\n' $((SIZE + 8)) | foresight shadow hint sh0 2>$W/hint || fail "hint past the end"
	grep -q "^sh0: 0 predicted" $W/hint || fail "past the end: $(cat $W/hint)"
	[ "$(sf 20)" = 0 ] || fail "hints after a replacement with none: $(sf 20)"
	# Not a foresight device; no such shadow; not for nobody.
	foresight dirty dump sh0 >$W/out 2>&1 && fail "a shadow taken for a foresight device"
	grep -q "no foresight device" $W/out || fail "dirty dump sh0: $(cat $W/out)"
	foresight shadow status nosuch >$W/out 2>&1 && fail "an unknown name found"
	grep -q "no foreshadow device of that name" $W/out || fail "nosuch: $(cat $W/out)"
	setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all foresight shadow status sh0 >$W/out 2>&1 &&
		fail "status as nobody"
	grep -q "CAP_SYS_ADMIN" $W/out || fail "nobody: $(cat $W/out)"
	dm remove sh0
	foresight shadow status sh0 >$W/out 2>&1 && fail "a removed device found"
	note "$(cat $W/nl.json | jq -c '{hydrated, regions, urgent, reads_source, state}')"
}

# netlink_races_removal: shadow-get and shadow-hint callers in a loop
# while the source holds reads and copies in flight (dm-delay, 300 ms),
# the table is reloaded twice and then removed: each call answers the
# device or "no foreshadow device", nothing else; the reads return the
# source's data; no detector fires (checked at the end of the run).
nl_caller() {
	local i out
	for i in $(seq 1 400); do
		[ -e $W/nl.stop ] && break
		if [ $(($1 % 2)) = 0 ]; then
			out=$(foresight shadow status sh0 --json 2>&1) && continue
		else
			out=$(printf '%s 512 0.9\n' $(((i * 97 % REGIONS) * REGION)) | foresight shadow hint sh0 2>&1) && continue
		fi
		case $out in
		*"no foreshadow device"*) echo gone >>$W/nl.$1 ;;
		*) echo "unexpected: $out" >>$W/nl.$1 ;;
		esac
	done
}
nl_gone() { cat $W/nl.[0-3] 2>/dev/null | grep -q gone; }
netlink_races_removal() {
	teardown
	fresh
	rm -f $W/nl.*
	dm create shslow --table "0 $SIZE delay $SRC 0 300" || return 1
	create /dev/mapper/shslow 0 2 bandwidth_kbps 4096 || return 1
	local c callers="" r readers="" k
	for c in 0 1 2 3; do
		nl_caller $c &
		callers="$callers $!"
	done
	for k in 1 2; do
		# Reads of missing regions, held at the source.
		for r in 100 200 300; do
			cmp <(region_of /dev/mapper/sh0 $((r + k))) <(region_of $W/src $((r + k))) >$W/nl.cmp$r$k 2>&1 &
			readers="$readers $!"
		done
		sleep 0.1
		dm load sh0 --table "0 $SIZE foreshadow $META $DST /dev/mapper/shslow $REGION 0 2 bandwidth_kbps 4096" &&
			dm suspend sh0 && dm resume sh0 || fail "reload $k with I/O in flight"
	done
	for r in $readers; do
		wait $r || fail "a read held across a reload: $(cat $W/nl.cmp*)"
	done
	sleep 0.5
	dm remove sh0 || fail "remove under netlink callers"
	poll 60 nl_gone || fail "no caller answered after the removal"
	touch $W/nl.stop
	for c in $callers; do wait $c; done
	cat $W/nl.[0-3] 2>/dev/null | grep unexpected && fail "a caller got something else: $(cat $W/nl.[0-3] | grep unexpected | sort | uniq -c | head -3)"
	note "$(cat $W/nl.[0-3] 2>/dev/null | grep -c gone) calls after the removal answered 'no foreshadow device'"
	dm remove shslow
}

# daemon_reranks: on a post-copy's destination the VM's disk is foresight
# over foreshadow; `foresight daemon --shadow` turns the live read
# predictions into the shadow's hints, so regions are copied before the
# reads reach them.
daemon_reranks() {
	teardown
	fresh
	create "" 0 2 bandwidth_kbps 2048 || return 1
	dm create shf --table "0 $SIZE foresight /dev/mapper/sh0 0" || return 1
	foresight daemon shf --shadow shf=sh0 --interval-ms 100 --duration 60 \
		--state-file $W/daemon.json --log-file $W/daemon.log &
	local d=$! p
	sleep 2
	# A VM reading sequentially from 24 MiB on, far ahead of ascending
	# copying, a region every 0.2 s.
	local i
	for i in $(seq 0 47); do
		dd if=/dev/mapper/shf of=/dev/null bs=64k skip=$((384 + i)) count=1 iflag=direct status=none
		sleep 0.2
	done
	p=$(sf 8)
	kill $d
	wait $d
	note "after 3 MiB of sequential reads: $(dm status sh0)"
	[ "$p" -ge 5 ] || fail "$p regions copied as predicted: $(dm status sh0); $(tail -2 $W/daemon.log)"
	dm remove shf
	dm remove sh0
}

# bit_on_disk R: region R's bit in the metadata device's bitmap (block 1).
bit_on_disk() {
	local byte
	byte=$(dd if=$META bs=1 skip=$((4096 + $1 / 8)) count=1 iflag=direct status=none 2>/dev/null |
		od -An -tu1 | tr -d ' ')
	[ -z "$byte" ] && byte=$(dd if=$META bs=1 skip=$((4096 + $1 / 8)) count=1 status=none | od -An -tu1 | tr -d ' ')
	echo $(((byte >> ($1 % 8)) & 1))
}

persisted() {
	teardown
	fresh
	create "" 1 no_hydration || return 1
	# A small synchronous write to region 50 hydrates it first; once the
	# write (O_SYNC: a flush) returns, the bit is on the metadata device.
	pattern $W/p50 4 p50 || return 1
	dd if=$W/p50 of=/dev/mapper/sh0 bs=4k seek=$((50 * 16 + 3)) oflag=direct,sync status=none || return 1
	[ "$(bit_on_disk 50)" = 1 ] || fail "region 50's bit not on disk after a synchronous write"
	[ "$(bit_on_disk 51)" = 0 ] || fail "region 51's bit set"
	region_of /dev/mapper/sh0 20 >/dev/null
	dm message sh0 0 mark 100 10 || return 1
	local before
	before=$(hydrated)
	[ "$before" -ge 12 ] || fail "hydrated $before"
	dm remove sh0 || return 1
	create "" 1 no_hydration || return 1
	[ "$(hydrated)" = "$before" ] || fail "hydrated $(hydrated) after a reload, was $before"
	cp $W/src $W/ref
	dd if=$W/p50 of=$W/ref bs=4k seek=$((50 * 16 + 3)) conv=notrunc status=none
	cmp <(region_of /dev/mapper/sh0 50) <(region_of $W/ref 50) || fail "region 50 lost its write"
	cmp <(region_of /dev/mapper/sh0 20) <(region_of $W/ref 20) || fail "region 20 differs"
	dm remove sh0
}

reload_keeps_hydration() {
	teardown
	fresh
	create "" 1 no_hydration || return 1
	# The next table is constructed now, while this one still serves...
	dm load sh0 --table "0 $SIZE foreshadow $META $DST $SRC $REGION 1 no_hydration" || return 1
	# ...and a write to region 70 hydrates it first.
	pattern $W/p70 4 p70 || return 1
	dd if=$W/p70 of=/dev/mapper/sh0 bs=4k seek=$((70 * 16 + 1)) oflag=direct status=none || return 1
	dm suspend sh0 && dm resume sh0 || return 1
	# The new table knows region 70 is on the destination.
	cp $W/src $W/ref
	dd if=$W/p70 of=$W/ref bs=4k seek=$((70 * 16 + 1)) conv=notrunc status=none
	cmp <(region_of /dev/mapper/sh0 70) <(region_of $W/ref 70) ||
		fail "region 70 lost the write made before the reload: $(dm status sh0)"
	dm remove sh0
}

failing_source() {
	teardown
	fresh
	# Regions 256-263 (MiB 16-16.5) of the source fail.
	local a=$((256 * REGION)) b=$((8 * REGION))
	printf '0 %s linear %s 0\n%s %s error\n%s %s linear %s %s\n' $a $SRC $a $b $((a + b)) $((SIZE - a - b)) $SRC $((a + b)) |
		dm create shbad || return 1
	create /dev/mapper/shbad || return 1
	# A read that needs a failing region fails; others work.
	region_of /dev/mapper/sh0 258 >/dev/null 2>&1 && fail "a read of a failing source region succeeded"
	cmp <(region_of /dev/mapper/sh0 5) <(region_of $W/src 5) || fail "region 5"
	local i
	for i in $(seq 1 200); do
		[ "$(sf 17)" -gt 0 ] && [ "$(hydrated)" -ge $((REGIONS - 8)) ] && break
		sleep 0.1
	done
	[ "$(sf 17)" -gt 0 ] || fail "no copy error counted: $(dm status sh0)"
	[ "$(hydrated)" = $((REGIONS - 8)) ] || fail "hydrated $(hydrated), not all but the 8 failing: $(dm status sh0)"
	note "failing: $(dm status sh0)"
	# The source heals: hydration completes, with the source's data.
	printf '0 %s linear %s 0\n' $SIZE $SRC | dm load shbad && dm suspend shbad && dm resume shbad || return 1
	wait_mode complete 60 || return 1
	same /dev/mapper/sh0 || fail "data differs after the source healed"
	foresight shadow status sh0 | grep -q "$REGIONS/$REGIONS regions hydrated (100.0%), complete" ||
		fail "foresight shadow status: $(foresight shadow status sh0)"
	dm remove sh0
	dm remove shbad
}

check "bad tables, metadata not ours and bad messages are refused" refused
check "with no I/O every region is copied in order, then a dm event" hydrates_everything
check "a read of a missing region comes from the source and hydrates it first" reads_from_the_source_first
check "source data plus writes (sub-region, whole-region, write-zeroes) under concurrent I/O" identity_under_io
check "predicted ranges are copied first, likeliest first" predicted_first
check "netlink: shadow-get says what the status line says (by name and number, in foresight status too); shadow-hint replaces the hints; other targets' devices, unknown and removed names and unprivileged callers are refused" over_netlink
check "netlink callers (shadow-get, shadow-hint) race two reloads and a removal with reads and copies held in flight at the source" netlink_races_removal
check "foresight daemon --shadow: the live read predictions of a foresight device over the shadow become its hints, copied before the reads reach them" daemon_reranks
check "the bitmap is on disk before a synchronous write returns, and survives a reload" persisted
check "a table reload keeps what the old table hydrated after the new one was loaded" reload_keeps_hydration
check "a failing source fails only the reads that need it; nothing is marked; it heals" failing_source
teardown
for n in shsrc shdst shmeta shsmall; do
	nullb_remove $n
done
ktap_end
