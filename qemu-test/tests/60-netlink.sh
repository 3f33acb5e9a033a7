#!/usr/bin/env bash
# The generic netlink family: every operation through the kernel's own ynl
# CLI (the spec is the contract) and through the `foresight` tool; the
# trace stream; privilege, malformed requests, devices going away.
. "$(dirname "$0")/../lib.sh"
ktap_begin "netlink"

REPO=$(cd "$(dirname "$0")/../.." && pwd)
SPEC=$REPO/Documentation/netlink/specs/foresight.yaml
YNL_CLI=$FORESIGHT_KSRC/tools/net/ynl/pyynl/cli.py
ynl() { python3 "$YNL_CLI" --spec "$SPEC" --no-schema --output-json "$@"; }
W=/tmp/fs-nl
mkdir -p $W
ORIGIN=/dev/ram0
SIZE=$(sectors $ORIGIN)
# A second device on the second ram disk, for dumps of several devices.
ORIGIN2=/dev/ram1

dm create nl0 --table "0 $SIZE foresight $ORIGIN 0 4 level 100 adaptive 0" || exit 1
dm create nl1 --table "0 $(sectors $ORIGIN2) foresight $ORIGIN2" || exit 1
NL0_DEV=$(printf '%d:%d' "0x$(stat -L -c %t /dev/mapper/nl0)" "0x$(stat -L -c %T /dev/mapper/nl0)")
# st_rdev of nl0, as the netlink `dev` attribute carries it.
NL0_RDEV=$(python3 -c "import os; print(os.stat('/dev/mapper/nl0').st_rdev)")
dmesg_mark

spec_valid() {
	python3 "$YNL_CLI" --spec "$SPEC" --schema "$FORESIGHT_KSRC/Documentation/netlink/genetlink.yaml" --validate
}
check "the spec validates against the kernel's genetlink schema" spec_valid

ynl_dev_get() {
	ynl --do dev-get --json '{"name":"nl0"}' >$W/one.json || return 1
	jq -e --argjson d "$NL0_RDEV" '.name == "nl0" and .dev == $d and .level == 100 and .sectors > 0' $W/one.json ||
		fail "dev-get by name: $(cat $W/one.json)"
	ynl --do dev-get --json "{\"dev\":$NL0_RDEV}" | jq -e '.name == "nl0"' || fail "dev-get by number"
	ynl --dump dev-get >$W/all.json || return 1
	jq -e '[.[].name] | sort == ["nl0","nl1"]' $W/all.json || fail "dump: $(cat $W/all.json)"
}
check "ynl: dev-get by name, by number, and dump" ynl_dev_get

ynl_dirty() {
	[ "$(ynl --do dirty-rotate --json '{"name":"nl0"}' | jq '."epoch-number"')" = 1 ] || fail "rotate"
	dd if=/dev/urandom of=/dev/mapper/nl0 bs=4k seek=100 count=3 oflag=direct status=none
	dd if=/dev/urandom of=/dev/mapper/nl0 bs=4k seek=5000 count=1 oflag=direct status=none
	ynl --dump dirty-get --json '{"name":"nl0"}' >$W/dirty.json || return 1
	jq -e '.[0]."epoch-number" == 1 and .[0].state == "tracked"' $W/dirty.json || fail "$(cat $W/dirty.json)"
	jq -r '.[].extent[]? | "\(.start) \(.length)"' $W/dirty.json >$W/nl.ext
	extents nl0 cur $W/dm.ext
	tail -n +2 $W/dm.ext | diff - $W/nl.ext || fail "netlink and dmsetup extents differ"
	[ "$(cat $W/nl.ext)" = "$(printf '800 24\n40000 8')" ] || fail "extents: $(cat $W/nl.ext)"
	ynl --do dirty-rotate --json '{"name":"nl0"}' | jq -e '."epoch-number" == 2 and .state == "tracked"' || fail "rotate 2"
	ynl --dump dirty-get --json '{"name":"nl0","epoch":1}' | jq -e '.[0]."epoch-number" == 1' || fail "previous"
}
check "ynl: dirty-rotate and dirty-get agree with dmsetup" ynl_dirty

ynl_predict_policy() {
	ynl --do predict --json '{"name":"nl0","kind":1,"horizon-ms":500,"range":[{"start":0,"length":2048,"probability":900000},{"start":65536,"length":8,"probability":10000}]}' |
		jq -e '.accepted == 2' || fail "predict"
	ynl --do dev-get --json '{"name":"nl0"}' | jq -e '."predict-ranges" == 2' || fail "predict counter"
	ynl --do policy-set --json '{"name":"nl0","level":40,"hysteresis":5,"trace-rate":1000}' || return 1
	[ "$(st nl0 15)" = 40 ] && [ "$(st nl0 16)" = fixed ] || fail "level: $(dm status nl0)"
	dm table nl0 | grep -q 'hysteresis 5' || fail "table: $(dm table nl0)"
	ynl --do policy-set --json '{"name":"nl0","adaptive":1,"level":100}' || return 1
	[ "$(st nl0 16)" = auto ] || fail "adaptive: $(dm status nl0)"
}
check "ynl: predict and policy-set" ynl_predict_policy

ynl_errors() {
	ynl --do dev-get --json '{"name":"nope"}' >$W/err 2>&1 && fail "unknown device accepted"
	grep -q 'no foresight device of that name' $W/err || fail "extack: $(cat $W/err)"
	ynl --do policy-set --json '{"name":"nl0","min-level":90,"max-level":10}' >$W/err 2>&1 && fail "min > max accepted"
	grep -qi 'level' $W/err || fail "extack: $(cat $W/err)"
	# Root without CAP_SYS_ADMIN (all else kept) is refused, with the reason.
	setpriv --bounding-set=-sys_admin --inh-caps=-sys_admin python3 "$YNL_CLI" --spec "$SPEC" --no-schema \
		--do dev-get --json '{"name":"nl0"}' >$W/err 2>&1 && fail "dev-get without CAP_SYS_ADMIN"
	grep -q 'CAP_SYS_ADMIN' $W/err || fail "$(cat $W/err)"
}
check "ynl: unknown device and bad policy rejected with extack; CAP_SYS_ADMIN needed" ynl_errors

# Reads at known offsets, repeated until the listener (slow to start under
# emulation) has them.
read_until_traced() { # file
	local i
	for i in $(seq 1 60); do
		dd if=/dev/mapper/nl0 of=/dev/null bs=4k skip=777 count=1 iflag=direct status=none
		sleep 0.5
		grep -q "$1" $W/stop 2>/dev/null && return 0
	done
}

ynl_trace() {
	# The subscriber writes each notification as it comes (unbuffered) and
	# is stopped once one has (it used to watch for a fixed 60 s).
	PYTHONUNBUFFERED=1 ynl --subscribe trace --duration 120 >$W/ntf.json &
	local pid=$! i
	for i in $(seq 1 80); do
		dd if=/dev/mapper/nl0 of=/dev/null bs=4k skip=777 count=1 iflag=direct status=none
		sleep 0.5
		grep -q '"trace-ntf"' $W/ntf.json && break
		kill -0 $pid 2>/dev/null || break
	done
	sleep 1
	kill $pid 2>/dev/null
	wait $pid 2>/dev/null
	grep -a '"trace-ntf"' $W/ntf.json | head -n 1 |
		jq -e 'select(.name == "trace-ntf") | .msg | select(.name == "nl0")' >/dev/null ||
		fail "no trace-ntf for nl0: $(head -c 300 $W/ntf.json)"
}
check "ynl: trace-ntf messages reach a subscriber" ynl_trace

tool_status() {
	foresight status nl0 >$W/st || return 1
	grep -q 'level' $W/st || fail "$(cat $W/st)"
	foresight status --json >$W/st.json || return 1
	jq -e 'length == 2' $W/st.json || fail "$(cat $W/st.json)"
	for d in nl0 /dev/mapper/nl0 "$NL0_DEV" "/dev/$(basename "$(readlink -f /dev/mapper/nl0)")"; do
		foresight status "$d" --json | jq -e 'length == 1 and .[0].name == "nl0"' >/dev/null || fail "status $d"
	done
}
check "tool: status by name, path, major:minor and dm-N, and of all" tool_status

tool_dirty() {
	[ "$(foresight dirty rotate nl0 2>/dev/null)" -gt 2 ] || fail "rotate"
	: >$W/truth
	for off in 3 4 5 900 901 15000; do
		dd if=/dev/urandom of=/dev/mapper/nl0 bs=4k seek=$off count=1 oflag=direct status=none
		echo "$((off * 4096)) 4096" >>$W/truth
	done
	foresight dirty dump nl0 >$W/tool.ext 2>$W/tool.err || fail "dump: $(cat $W/tool.err)"
	grep -q '^# epoch [0-9]* tracked' $W/tool.err || fail "stderr: $(cat $W/tool.err)"
	(echo "epoch x tracked"; cat $W/tool.ext) >$W/tool.lst
	"$REPO/qemu-test/dirty-check" $W/truth $W/tool.lst || return 1
	foresight dirty dump nl0 --json | jq -e '.state == "tracked" and (.extents | length) == 3' || fail "json"
	foresight dirty rotate nl0 >/dev/null
	foresight dirty dump nl0 --epoch previous | diff - $W/tool.ext || fail "previous epoch"
	# Level 0: untracked, exit status 3.
	foresight policy set nl0 --level 0
	local s=0
	foresight dirty dump nl0 >/dev/null 2>$W/tool.err || s=$?
	[ $s = 3 ] || fail "untracked dump exit $s: $(cat $W/tool.err)"
	foresight policy set nl0 --level 100
}
check "tool: dirty rotate and dump (none missing; untracked exits 3)" tool_dirty

tool_predict_policy() {
	printf '0 64 0.9\n# a comment\n\n4096 8 0.25\n' | foresight predict push nl0 --kind write >$W/out || return 1
	grep -q 2 $W/out || fail "accepted: $(cat $W/out)"
	seq 0 5000 | awk '{print $1 * 8, 8, 0.5}' | foresight predict push nl0 >$W/out || return 1
	grep -q 5001 $W/out || fail "batches: $(cat $W/out)"
	echo "12 x 0.5" | foresight predict push nl0 2>$W/err && fail "malformed line accepted"
	grep -q 'line 1' $W/err || fail "$(cat $W/err)"
	foresight policy set nl0 --level 60 --w-io 1000 || return 1
	[ "$(st nl0 15)" = 60 ] || fail "level: $(dm status nl0)"
	foresight policy set nl0 --level 101 2>$W/err && fail "level 101 accepted"
	foresight policy set nl0 --level 100
}
check "tool: predict push (batches, malformed input) and policy set" tool_predict_policy

tool_trace() {
	foresight trace record nl0 -o $W/t.trace --duration 600 &
	local pid=$!
	for i in $(seq 1 20); do
		dd if=/dev/mapper/nl0 of=/dev/null bs=4k skip=$((1000 + i)) count=1 iflag=direct status=none
		dd if=/dev/zero of=/dev/mapper/nl0 bs=4k seek=$((3000 + i)) count=1 oflag=direct status=none
		sleep 0.3
	done
	kill -INT $pid
	wait $pid
	head -2 $W/t.trace | grep -q '^# foresight-trace v1' || fail "header: $(head -2 $W/t.trace)"
	grep -q "^# device nl0 $NL0_DEV " $W/t.trace || fail "device line: $(head -2 $W/t.trace)"
	grep -Eq '^[0-9]+ R 8136 8$' $W/t.trace || fail "read at block 1017 missing"
	grep -Eq '^[0-9]+ W 24136 8$' $W/t.trace || fail "write at block 3017 missing"
	note "trace: $(grep -c '^[0-9]' $W/t.trace) records"
	# Replay the reads: the same requests again.
	foresight trace replay $W/t.trace /dev/mapper/nl0 --no-timing --json >$W/replay.json || return 1
	jq -e '.ios > 0' $W/replay.json || fail "$(cat $W/replay.json)"
	# At its timing (4x faster), in 1 s slices: every read in one slice.
	foresight trace replay $W/t.trace /dev/mapper/nl0 --speed 4 --interval-s 1 --json >$W/slices.json ||
		return 1
	note "slices: $(jq -c '[.intervals[] | [.t_s, .reads]]' $W/slices.json)"
	jq -e '(.intervals | length) >= 2 and ([.intervals[].reads] | add) == .reads and .reads > 0' \
		$W/slices.json >/dev/null || fail "slices: $(cat $W/slices.json)"
}
check "tool: trace record (reads and writes as done) and replay (at its timing, in slices)" tool_trace

trace_rate_limit() {
	foresight policy set nl0 --trace-rate 20 || return 1
	local d0
	d0=$(foresight status nl0 --json | jq '.[0].trace_dropped')
	rm -f $W/limited.trace
	foresight trace record nl0 -o $W/limited.trace --duration 600 2>$W/rec.err &
	local pid=$! i
	# The recorder joins the trace group before it writes the header (a
	# loaded guest takes seconds to start it): reads before then are not
	# traced, so neither delivered nor dropped.
	for i in $(seq 1 120); do
		[ -s $W/limited.trace ] && break
		sleep 0.5
	done
	[ -s $W/limited.trace ] || {
		kill -INT $pid
		wait $pid
		fail "the recorder did not start in 60 s: $(cat $W/rec.err)"
		return 1
	}
	dd if=/dev/mapper/nl0 of=/dev/null bs=4k count=500 iflag=direct status=none
	sleep 0.5
	kill -INT $pid
	wait $pid
	local n d1
	n=$(grep -c '^[0-9]' $W/limited.trace)
	d1=$(foresight status nl0 --json | jq '.[0].trace_dropped')
	note "rate 20/s: $n records delivered, $((d1 - d0)) dropped"
	[ $((d1 - d0)) -gt 300 ] || fail "rate limit dropped only $((d1 - d0))"
	[ "$n" -lt 200 ] || fail "rate limit let $n records through"
	foresight policy set nl0 --trace-rate 0
}
check "the trace rate limit drops (and counts) what exceeds it" trace_rate_limit

tool_daemon() {
	local before
	before=$(foresight status nl0 --json | jq '.[0].predict_ranges')
	foresight daemon nl0 --duration 120 --interval-ms 200 --log-file $W/daemon.log \
		--state-file $W/daemon.json &
	local pid=$!
	# A sequential reader the predictors can follow: 201 reads of 4 KiB,
	# paced at 40 a second (about 25 of the daemon's 200 ms intervals,
	# however slow the kernel: a dd per read spread them by exec time,
	# which under KASAN left lookahead nothing to cover).
	fio --name=seq --filename=/dev/mapper/nl0 --rw=read --bs=4k --direct=1 \
		--offset=$((8000 * 4096)) --size=$((201 * 4096)) --rate_iops=40 \
		--ioengine=psync >/dev/null 2>&1 || fail "fio"
	sleep 2
	# While it runs, status shows the predictor serving nl0 and its live
	# scores, and heat the hottest region: where the reads were (8000 x 4k
	# = sector 64000, in the 1 MiB region at sector 63488).
	local st heat
	st=$(foresight status nl0 --state-file $W/daemon.json)
	heat=$(foresight heat nl0 --state-file $W/daemon.json --top 3)
	note "$(printf '%s\n' "$st" | grep -A4 '^predictor:' | tr -s ' ' | paste -sd';')"
	note "heat: $(printf '%s\n' "$heat" | grep -v '^#' | paste -sd';')"
	kill -INT $pid
	wait $pid
	note "daemon: $(grep -c accepted= $W/daemon.log) pushes; last: $(grep accepted= $W/daemon.log | tail -1)"
	grep -Eq 'nl0 read=[1-9][0-9]* .*accepted=[1-9]' $W/daemon.log || fail "no read predictions taken: $(tail -5 $W/daemon.log)"
	local after
	after=$(foresight status nl0 --json | jq '.[0].predict_ranges')
	[ "$after" -gt "$before" ] || fail "predict_ranges $before -> $after"
	printf '%s\n' "$st" | grep -Eq '^predictor: +auto \(daemon: [1-9][0-9]* accesses learnt' ||
		fail "status shows no predictor: $st"
	printf '%s\n' "$st" | grep -Eq '^  scores: +lookahead: coverage [1-9][0-9.]*%' ||
		fail "status shows no live scores for lookahead: $st"
	[ "$(printf '%s\n' "$heat" | grep -v '^#' | head -1 | cut -d' ' -f1-2)" = "63488 2048" ] ||
		fail "heat: the region read is not the hottest: $heat"
	# Once the daemon is gone, status says nothing of it.
	foresight status nl0 --state-file $W/daemon.json | grep -q '^predictor:' &&
		fail "status shows the predictor of a daemon that stopped"
	foresight heat nl0 --state-file $W/daemon.json 2>&1 | grep -q 'no running foresight daemon' ||
		fail "heat without a daemon: $(foresight heat nl0 --state-file $W/daemon.json 2>&1)"
}
check "tool: the daemon learns from the trace, pushes predictions; status shows its predictor and scores, heat its hottest region" tool_daemon

# Device-mapper's privilege model: every operation and the trace group need
# CAP_SYS_ADMIN in the initial user namespace (nl-raw --access tries each).
ACCESS_OPS="dev-get dev-get-dump dirty-get-dump dirty-rotate predict policy-set shadow-get-dump shadow-hint budget-get budget-set trace-join"
NOBODY="setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all"
# Root with CAP_NET_ADMIN as its only capability (a network container's).
NET_ADMIN="setpriv --bounding-set=-all,+net_admin --inh-caps=-all,+net_admin"
access() { # label [command...]: runs nl-raw --access as it
	local label=$1
	shift
	"$@" "$REPO/qemu-test/nl-raw" --access nl0 >$W/access.$label 2>&1 || fail "$label: $(cat $W/access.$label)"
}
refused() { # label command...: every operation refused with EPERM and the reason
	local label=$1 op
	access "$@" || return 1
	for op in $ACCESS_OPS; do
		grep -q "^$op EPERM" $W/access.$label || fail "$label: $op not refused: $(cat $W/access.$label)"
		[ $op = trace-join ] || grep -q "^$op EPERM .*CAP_SYS_ADMIN" $W/access.$label ||
			fail "$label: $op refused without the reason: $(grep "^$op" $W/access.$label)"
	done
}
privilege() {
	# The contexts are what they claim: nobody has no capability, the
	# network container has CAP_NET_ADMIN (bit 12) only.
	$NOBODY grep -q '^CapEff:.*0000000000000000' /proc/self/status || fail "nobody has capabilities"
	$NET_ADMIN grep -q '^CapEff:.*0000000000001000' /proc/self/status || fail "$($NET_ADMIN grep CapEff /proc/self/status)"
	access root || return 1
	for op in $ACCESS_OPS; do
		# nl0 is no foreshadow device: allowed, then not found.
		local want=OK
		[ $op = shadow-hint ] && want=ENODEV
		grep -q "^$op $want" $W/access.root || fail "root: $op: $(cat $W/access.root)"
	done
	refused nobody $NOBODY
	refused net_admin $NET_ADMIN
	# Root of a user namespace of its own, in the initial network namespace.
	refused userns unshare -Ur
	# ... and in a network namespace of its own: the family is not there.
	access userns-netns unshare -Urn || return 1
	grep -qx 'family ENOENT -' $W/access.userns-netns || fail "netns: $(cat $W/access.userns-netns)"
	# The tool turns the refusals into sentences.
	$NOBODY foresight status nl0 >$W/out 2>&1 && fail "status as nobody"
	grep -q "permission denied: dev-get needs CAP_SYS_ADMIN in the host's initial user namespace" $W/out ||
		fail "$(cat $W/out)"
	$NOBODY foresight trace record nl0 -o /dev/null >$W/out 2>&1 && fail "trace as nobody"
	grep -q "permission denied: .*CAP_SYS_ADMIN" $W/out || fail "$(cat $W/out)"
	unshare -Urn foresight status nl0 >$W/out 2>&1 && fail "status in a netns"
	grep -q "not in the host's initial network namespace" $W/out || fail "$(cat $W/out)"
}
check "privilege: every operation and the trace group need CAP_SYS_ADMIN in the initial user namespace (refused as nobody, with CAP_NET_ADMIN only, in unshare -Ur and -Urn)" privilege

malformed() {
	"$REPO/qemu-test/nl-raw" nl0 "$SIZE" >$W/raw || return 1
	note "$(tr '\n' ';' <$W/raw)"
	local bad=0
	while read -r c e; do
		grep -q "^$c $e " $W/raw || { echo "$c: wanted $e, got: $(grep "^$c " $W/raw)"; bad=1; }
	done <<-EOF
		dev-u32-too-short EINVAL
		name-not-terminated EINVAL
		name-too-long EINVAL
		name-as-u32 ENODEV
		no-device-given EINVAL
		unknown-device ENODEV
		unknown-dev-number ENODEV
		kind-out-of-range ERANGE
		probability-over-one ERANGE
		range-zero-length ERANGE
		range-missing-probability EINVAL
		range-past-end ERANGE
		range-not-nested EINVAL
		too-many-ranges E2BIG
		unknown-command ENOTSUP
		well-formed-predict OK
	EOF
	[ $bad = 0 ]
}
check "malformed requests rejected (wrong types, sizes, ranges, oversized batch, unknown device)" malformed

going_away() {
	# A dump and a status racing the removal either succeed or fail with ENODEV.
	dm create nl2 --table "0 $SIZE foresight $ORIGIN" || return 1
	# (Until the device is gone: each call starts a process, slow under
	# emulation.)
	(for i in $(seq 1 20); do
		foresight status nl2 >/dev/null 2>&1 || break
		foresight dirty dump nl2 >/dev/null 2>&1
	done) &
	local pid=$!
	sleep 1
	dm remove nl2
	wait $pid
	foresight status nl2 >$W/out 2>&1 && fail "removed device found"
	grep -q ENODEV $W/out || fail "$(cat $W/out)"
}
check "a removed device fails cleanly (ENODEV)" going_away

no_warnings() {
	dmesg_since | grep -E 'WARNING|BUG|Oops|refcount|leak' && fail "kernel complained"
	return 0
}
check "no kernel warning from any of it" no_warnings

no_module() {
	dm remove nl0 && dm remove nl1 || return 1
	rmmod dm_foresight || return 1
	local s=0
	foresight status >$W/out 2>&1 || s=$?
	insmod "$FORESIGHT_KO" || return 1
	[ $s != 0 ] || fail "status without the module succeeded"
	grep -q 'module is not loaded' $W/out || fail "$(cat $W/out)"
}
check "tool: a clear message without the module" no_module

ktap_end
