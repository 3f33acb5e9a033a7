#!/usr/bin/env bash
# The host's budgets.  The cache budget: the module parameter
# cache_total_mb and netlink budget-set give a total that the prefetch
# caches of every table never exceed together; a device whose new table is loaded while the old one
# serves is charged once (its largest), so a reload passes its reservation
# on; a removal gives it back; a table, a cache_mb message or a policy-set
# that would go over is refused with a reason, before anything changes;
# the total cannot go below what is held.  Under racing reloads, removals
# and resizes, with writes held in flight: never over.
. "$(dirname "$0")/../lib.sh"
ktap_begin "host-wide cache and bandwidth budgets, CPU placement"

W=/tmp/fs-budget
rm -rf $W
mkdir -p $W
ORIGIN=$(nullb bud 64 memory_backed=1) || exit 1
ORIGIN2=$(nullb bud2 64 memory_backed=1) || exit 1
SDST=$(nullb buddst 64 memory_backed=1) || exit 1
SMETA=$(nullb budmeta 4 memory_backed=1) || exit 1
SIZE=$(sectors $ORIGIN)

# budget FIELD: from `foresight budget --json`.
budget() { foresight budget --json | jq ".$1"; }
# table MB [ORIGIN]: a foresight table with a cache of MB MiB.
table() { echo "0 $SIZE foresight ${2:-$ORIGIN} 0 2 cache_mb $1"; }
# ptable KBPS ORIGIN: one with a prefetch limit of KBPS KiB/s.
ptable() { echo "0 $SIZE foresight $2 0 2 prefetch_kbps $1"; }
# stable KBPS SOURCE: a foreshadow table hydrating from SOURCE at KBPS.
stable() {
	dd if=/dev/zero of=$SMETA bs=1M count=4 oflag=direct status=none
	echo "0 $SIZE foreshadow $SMETA $SDST $2 128 1 no_hydration 2 bandwidth_kbps $1"
}
cleanup() {
	local d
	for d in b0 b1 b2 bs; do dm remove $d 2>/dev/null; done
	dm remove bslow 2>/dev/null
	true
}

# The module again, with cache_total_mb (no device exists between tests).
reload_module() {
	rmmod dm_foresight || return 1
	insmod "$FORESIGHT_KO" "$@" || return 1
}

parameter_and_refusals() {
	cleanup
	reload_module cache_total_mb=96 || { fail "insmod cache_total_mb=96"; return 1; }
	[ "$(budget cache_total_mb)" = 96 ] || fail "total $(budget cache_total_mb) after insmod cache_total_mb=96"
	dm create b0 --table "$(table 64)" || { fail "64 of 96 refused"; return 1; }
	# Over the total: refused, with the reason.
	dm create b1 --table "$(table 64)" 2>$W/err && fail "a second 64 MiB cache fitted in 96"
	dmesg | tail -5 | grep -q "over the host's cache budget" || fail "no reason in the kernel log: $(dmesg | tail -3)"
	dm remove b1 2>/dev/null
	dm create b1 --table "$(table 32)" || { fail "32 more refused"; return 1; }
	[ "$(budget cache_charged_mb)" = 96 ] && [ "$(budget devices)" = 2 ] ||
		fail "charged $(foresight budget --json), not 96 MiB for 2 devices"
	# Growing a cache over the total: refused, by message and by policy-set,
	# leaving it as it was.
	dm message b0 0 cache_mb 65 2>$W/err && fail "cache_mb 65 accepted"
	foresight policy set b0 --cache-mb 65 --level 50 2>$W/err && fail "policy-set cache-mb 65 accepted"
	grep -q "over the host's cache budget" $W/err || fail "policy-set refusal: $(cat $W/err)"
	[ "$(foresight status b0 --json | jq '.[0].level')" != 50 ] ||
		fail "the refused policy-set changed the level"
	[ "$(foresight status b0 --json | jq '.[0].cache_capacity')" = $((64 << 20)) ] ||
		fail "b0's cache changed: $(foresight status b0 --json | jq '.[0].cache_capacity')"
	# Shrinking then growing back within it: fine.
	dm message b0 0 cache_mb 16 && dm message b0 0 cache_mb 64 || fail "resizes within the budget refused"
	# The total cannot go under what is held; above it, it can.
	foresight budget --cache-mb 95 >$W/out 2>&1 && fail "total 95 under 96 held accepted"
	grep -q "lower their cache_mb first" $W/out || fail "why: $(cat $W/out)"
	foresight budget --cache-mb 128 >/dev/null || fail "total 128 refused"
	# Nobody may not change it.
	setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all foresight budget --cache-mb 0 >$W/out 2>&1 &&
		fail "nobody changed the budget"
	grep -q CAP_SYS_ADMIN $W/out || fail "nobody: $(cat $W/out)"
	[ "$(budget cache_total_mb)" = 128 ] || fail "total $(budget cache_total_mb)"
	# A removal gives the reservation back.
	dm remove b1
	[ "$(budget cache_charged_mb)" = 64 ] || fail "charged $(budget cache_charged_mb) after removing b1"
	note "$(foresight budget | tr "\n" " ")"
	cleanup
}

# A reload: the new table (loaded, not resumed) coexists with the old one;
# the device is charged its larger cache, not the sum.
reload_charged_once() {
	cleanup
	foresight budget --cache-mb 100 >/dev/null || return 1
	dm create b0 --table "$(table 60)" || return 1
	dm load b0 --table "$(table 60)" || fail "a reload with the same cache refused (counted twice?)"
	[ "$(budget cache_charged_mb)" = 60 ] || fail "charged $(budget cache_charged_mb) with two tables of 60"
	dm resume b0
	dm load b0 --table "$(table 100)" || fail "a reload growing to the whole total refused"
	[ "$(budget cache_charged_mb)" = 100 ] || fail "charged $(budget cache_charged_mb) with 60 and 100 coexisting"
	# Meanwhile nothing else fits.
	dm create b1 --table "$(table 1)" 2>/dev/null && fail "1 MiB more fitted while the reload holds 100"
	dm remove b1 2>/dev/null
	dm clear b0 || return 1
	[ "$(budget cache_charged_mb)" = 60 ] || fail "charged $(budget cache_charged_mb) after the inactive table was cleared"
	dm load b0 --table "$(table 40)" && dm resume b0 || return 1
	[ "$(budget cache_charged_mb)" = 40 ] || fail "charged $(budget cache_charged_mb) after a reload to 40"
	cleanup
	[ "$(budget cache_charged_mb)" = 0 ] || fail "charged $(budget cache_charged_mb) with no device"
}

# Racing: reload storms of b0 (over a slow-writing origin, writes held in
# flight), create/remove of b1, resizes of b2 by netlink; a sampler sees
# the charge and the live caches never over the total.
racing() {
	cleanup
	rm -f $W/stop $W/over $W/ok.*
	foresight budget --cache-mb 64 >/dev/null || return 1
	dm create bslow --table "0 $SIZE delay $ORIGIN 0 0 $ORIGIN 0 200" || return 1
	dm create b0 --table "$(table 16 /dev/mapper/bslow)" || return 1
	dm create b2 --table "$(table 16)" || return 1
	udevadm settle
	# Writes held 200 ms each, all along.
	writer_bg /dev/mapper/b0 32k 4 0
	(local i=0
	while [ ! -e $W/stop ]; do
		i=$((i + 1))
		dm load b0 --table "$(table $((8 + (i % 4) * 8)) /dev/mapper/bslow)" 2>/dev/null &&
			dm suspend b0 && dm resume b0 && echo >>$W/ok.reload
	done) &
	local reloader=$!
	(while [ ! -e $W/stop ]; do
		dm create b1 --table "$(table 24)" 2>/dev/null && echo >>$W/ok.create
		dm remove b1 2>/dev/null
	done) &
	local creator=$!
	(local i=0
	while [ ! -e $W/stop ]; do
		i=$((i + 1))
		foresight policy set b2 --cache-mb $(((i % 3) * 16)) 2>/dev/null && echo >>$W/ok.resize
	done) &
	local resizer=$!
	# Sampled for 30 s of racing (a count of samples would stretch with
	# the racers' load on the guest's two CPUs: 30 took 200 s).
	local n=0 c live end=$((SECONDS + 30))
	while [ $SECONDS -lt $end ] || [ $n -lt 3 ]; do
		n=$((n + 1))
		c=$(budget cache_charged_mb)
		live=$(foresight status --json | jq '[.[] | select(.target != "foreshadow") | .cache_capacity] | add // 0')
		if [ "$c" -gt 64 ] || [ "$live" -gt $((64 << 20)) ]; then
			echo "charged $c MiB, live caches $live bytes" >>$W/over
		fi
		sleep 0.2
	done
	touch $W/stop
	writer_end
	wait $reloader $creator $resizer
	[ -e $W/over ] && fail "over the 64 MiB total: $(head -3 $W/over)"
	local r=$(cat $W/ok.reload 2>/dev/null | wc -l) k=$(cat $W/ok.create 2>/dev/null | wc -l) z=$(cat $W/ok.resize 2>/dev/null | wc -l)
	[ "$r" -gt 0 ] && [ "$k" -gt 0 ] && [ "$z" -gt 0 ] || fail "a racer never succeeded: $r reloads, $k creates, $z resizes"
	note "$n samples, never over 64 MiB; $r reloads, $k creates of b1, $z resizes of b2 succeeded; $(foresight budget | head -1)"
	cleanup
	[ "$(budget cache_charged_mb)" = 0 ] || fail "charged $(budget cache_charged_mb) with no device"
}

# Bandwidth: per origin backend, foresight's prefetch_kbps and
# foreshadow's bandwidth_kbps of the tables reading from it.
bandwidth_per_backend() {
	cleanup
	foresight budget --cache-mb 0 --bandwidth-kbps 8192 >/dev/null || { fail "bandwidth total 8192"; return 1; }
	dm create b0 --table "$(ptable 4096 $ORIGIN)" || { fail "4096 of 8192 refused"; return 1; }
	# No limit is over any total.
	dm create b1 --table "$(ptable 0 $ORIGIN)" 2>/dev/null && fail "a table with no prefetch limit fitted a total"
	dm remove b1 2>/dev/null
	dmesg | tail -5 | grep -q "prefetch_kbps is over the host's bandwidth budget" || fail "no reason: $(dmesg | tail -3)"
	dm create b1 --table "$(ptable 4096 $ORIGIN)" || { fail "the second 4096 refused"; return 1; }
	# $ORIGIN is full: a shadow reading from it is refused; from $ORIGIN2, fine.
	dm create bs --table "$(stable 1024 $ORIGIN)" 2>/dev/null && fail "a shadow fitted a full backend"
	dm remove bs 2>/dev/null
	dmesg | tail -5 | grep -q "bandwidth_kbps is over the host's bandwidth budget" || fail "no reason for the shadow: $(dmesg | tail -3)"
	dm create bs --table "$(stable 4096 $ORIGIN2)" || { fail "a shadow from the other backend refused"; return 1; }
	dm create b2 --table "$(ptable 4096 $ORIGIN2)" || { fail "4096 more from the other backend refused"; return 1; }
	[ "$(budget bandwidth_charged_kbps)" = 8192 ] && [ "$(budget devices)" = 4 ] && [ "$(budget unlimited)" = 0 ] ||
		fail "charged $(foresight budget --json)"
	# Changes over it: refused, leaving the limits as they were.
	dm message b0 0 cache set prefetch_kbps 6000 2>/dev/null && fail "cache set prefetch_kbps 6000 accepted"
	foresight policy set b0 --prefetch-kbps 6000 2>$W/err && fail "policy-set prefetch-kbps 6000 accepted"
	grep -q "over the host's bandwidth budget" $W/err || fail "policy-set refusal: $(cat $W/err)"
	dm message bs 0 set bandwidth_kbps 5000 2>/dev/null && fail "shadow set bandwidth_kbps 5000 accepted"
	dm table bs | grep -q "bandwidth_kbps 4096" || fail "the shadow's limit changed: $(dm table bs)"
	dm table b0 | grep -q "prefetch_kbps 4096" || fail "b0's limit changed: $(dm table b0)"
	dm message bs 0 set bandwidth_kbps 2048 || fail "a shadow's limit lowered refused"
	# The total cannot go under what a backend gives.
	foresight budget --bandwidth-kbps 4096 >$W/out 2>&1 && fail "bandwidth total 4096 under 8192 accepted"
	grep -q "lower the tables' limits first" $W/out || fail "why: $(cat $W/out)"
	# A removal gives its share back: b0 may take it.
	dm remove b1
	dm load b0 --table "$(ptable 8192 $ORIGIN)" && dm resume b0 || fail "b0 to 8192 after b1's removal refused"
	note "$(foresight budget | tail -1)"
	cleanup
	foresight budget --bandwidth-kbps 0 >/dev/null || fail "no bandwidth limit again"
	dm create b0 --table "$(ptable 0 $ORIGIN)" || fail "no limit refused without a total"
	[ "$(budget unlimited)" = 1 ] || fail "unlimited $(budget unlimited)"
	cleanup
}

# CPU placement: every table's workqueues are in sysfs, named after their
# device, and `foresight placement --kernel-cpus` sets the CPUs they run
# on; I/O and prefetching go on; a reload's new table has queues of its own.
placement() {
	cleanup
	dm create b0 --table "0 $SIZE foresight $ORIGIN 0 2 cache_mb 4" || return 1
	dm create bs --table "$(stable 0 $ORIGIN2)" || return 1
	local d0 ds
	d0=$(dmsetup info -c --noheadings -o major,minor --separator : b0 | tr -d ' ')
	ds=$(dmsetup info -c --noheadings -o major,minor --separator : bs | tr -d ' ')
	foresight placement b0 --json >$W/p.json || { fail "placement b0"; return 1; }
	[ "$(jq -r 'map(.kind) | sort | join(",")' $W/p.json)" = "fsd,fsfetch,fsthrot" ] || fail "b0's queues: $(cat $W/p.json)"
	jq -e --arg d "$d0" 'all(.dev == $d and .cpus == "0-1")' $W/p.json >/dev/null || fail "b0: $(cat $W/p.json)"
	foresight placement bs --json | jq -e --arg d "$ds" 'length == 1 and .[0].kind == "fshydr" and .[0].dev == $d' >/dev/null ||
		fail "bs: $(foresight placement bs --json)"
	# All of them on CPU 1; the kernel's own view agrees.
	foresight placement --kernel-cpus 1 >/dev/null || fail "--kernel-cpus 1"
	foresight placement --json | jq -e 'length == 4 and all(.cpus == "1")' >/dev/null || fail "after: $(foresight placement --json)"
	local q
	for q in $(jq -r '.[].name' $W/p.json); do
		[ "$((16#$(tr -d ',\n' </sys/devices/virtual/workqueue/$q/cpumask)))" = 2 ] ||
			fail "$q: cpumask $(cat /sys/devices/virtual/workqueue/$q/cpumask)"
	done
	# The device works on it: writes, a prediction fetched, a hit.
	pattern $W/pl 1024 placement || return 1
	dd if=$W/pl of=/dev/mapper/b0 bs=1M oflag=direct status=none || fail "write"
	dm message b0 0 prefetch 0 2048 1000000 >/dev/null || fail "prefetch"
	local i
	for i in $(seq 1 50); do
		[ "$(foresight status b0 --json | jq '.[0].cache_bytes')" -ge $((1 << 20)) ] && break
		sleep 0.1
	done
	cmp <(dd if=/dev/mapper/b0 bs=1M count=1 iflag=direct status=none) $W/pl || fail "read back"
	[ "$(foresight status b0 --json | jq '.[0].cache_hits')" -gt 0 ] || fail "no hit: $(foresight status b0 --json | jq -c '.[0] | {cache_bytes, cache_hits, cache_misses}')"
	# A reload: new queues (new names, the CPUs of the module's default),
	# the old ones gone.
	dm load b0 --table "0 $SIZE foresight $ORIGIN 0 2 cache_mb 4" && dm suspend b0 && dm resume b0 || return 1
	foresight placement b0 --json >$W/p2.json
	[ "$(jq length $W/p2.json)" = 3 ] || fail "after the reload: $(cat $W/p2.json)"
	[ -z "$(jq -r '.[].name' $W/p.json $W/p2.json | sort | uniq -d)" ] || fail "a queue kept its name across the reload"
	note "b0's queues: $(jq -r '.[].name' $W/p.json | tr '\n' ' ')-> after the reload: $(jq -r '.[] | "\(.name) (cpus \(.cpus))"' $W/p2.json | tr '\n' ' ')"
	foresight placement --kernel-cpus 0-1 >/dev/null
	cleanup
	ls /sys/devices/virtual/workqueue | grep -q '^fs' && fail "queues left: $(ls /sys/devices/virtual/workqueue | grep '^fs')"
	true
}

check "cache_total_mb at load; a table, a cache_mb message and a policy-set over the total are refused with the reason; the total not below what is held; not for nobody; a removal gives back" parameter_and_refusals
check "a reload is charged once, at the larger of the two tables; clearing the inactive table gives its part back" reload_charged_once
check "racing reloads (writes held in flight), creates, removals and resizes never exceed the total" racing
check "CPU placement: each table's workqueues in sysfs by device; foresight placement sets their CPUs; I/O and prefetch go on; a reload has queues of its own" placement
check "bandwidth per origin backend: prefetch and hydration limits (foresight, foreshadow; tables, messages, policy-set) within the total; no limit refused under one; a removal gives back" bandwidth_per_backend

# The module as the other scripts expect it (no total).
reload_module || fail "insmod without parameters"
for d in bud bud2 buddst budmeta; do nullb_remove $d; done
ktap_end
