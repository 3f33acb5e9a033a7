#!/usr/bin/env bash
# The daemon's policy engine (issue 14): three devices replay the three
# Tencent CBS traces at once under a host cache total of half their
# combined working sets; switched to `throughput` once each has read a
# tenth of its trace, the engine moves the memory, within 10 s, to the
# device whose miss-ratio curve gains most from it; switching the policy
# at run time (`foresight policy engine`) takes effect within one
# interval; the caches never hold more than the total together; the
# engine keeps the kernel's workers on the CPUs it is given.
. "$(dirname "$0")/../lib.sh"
ktap_begin "policy engine: a host's cache total shared by policy"

W=/tmp/fs-engine
rm -rf $W
mkdir -p $W
NAMES="tencent-cbs-most_size_thpt.222 tencent-cbs-rw_60_40.490 tencent-cbs-rw_65_35.211"
for n in $NAMES; do
	zcat "$(dirname "$0")/../traces/$n.ftrace.gz" >$W/$n.ftrace || exit 1
done
# Not memory-backed: reads cost nothing and hold no memory.
i=0
for n in $NAMES; do
	ORIGINS[$i]=$(nullb eng$i 1024) || exit 1
	i=$((i + 1))
done
SIZE=$(sectors ${ORIGINS[0]})
STATE=$W/daemon.json
LOG=$W/daemon.log

cleanup() {
	[ -n "${DAEMON:-}" ] && kill -INT $DAEMON 2>/dev/null && wait $DAEMON 2>/dev/null
	DAEMON=
	pkill -f "foresight trace replay $W" 2>/dev/null
	wait 2>/dev/null
	local n
	for n in $NAMES; do dm remove $n 2>/dev/null; done
	foresight budget --cache-mb 0 >/dev/null 2>&1
	true
}

# logged_at PATTERN [LINE]: when the daemon first logged a line matching
# PATTERN (extended regex), from line LINE of its log on, in seconds since
# the epoch; empty if it has not.  The engine's timing is read from its own
# log: this script's polling (a process or two every half second) lags
# under a loaded host.
logged_at() {
	local t
	t=$(tail -n +"${2:-1}" $LOG | grep -E "$1" | head -1 | cut -d' ' -f1)
	[ -n "$t" ] && date -d "$t" +%s.%N
}

# requested: when `foresight policy engine` last wrote its request (the
# control file next to the state file), in seconds since the epoch: the
# tool's own start, seconds on a loaded guest, is not the daemon's.
requested() { date -r $W/engine-policy +%s.%N; }

# secs_since T0 T1: T1 - T0, rounded to 0.1 s.
secs_since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# caches_once: each device's cache in MiB, in NAMES' order, from one
# `dmsetup status` of every device (the tool and jq took a second of the
# guest's CPU per sample).
caches_once() {
	dmsetup status 2>/dev/null | awk -v names="$NAMES" '
		{ sub(":$", "", $1); c[$1] = $24 }
		END { n = split(names, d, " "); for (i = 1; i <= n; i++) printf "%s%d", (i > 1 ? " " : ""), c[d[i]] / 1048576 }'
	echo
}

# caches: the same, read until two reads agree: the devices are read one
# after the other, so a read during the engine's moves (one device shrunk,
# then another grown) can pair one's old size with the other's new one
# and sum over the total that the kernel never exceeded.
caches() {
	local a b i
	a=$(caches_once)
	for i in 1 2 3; do
		b=$(caches_once)
		[ "$a" = "$b" ] && break
		a=$b
	done
	echo "$a"
}
# charged: the MiB the kernel charges to the host's cache total.
charged() {
	local w
	read -ra w <<<"$(foresight budget)"
	echo "${w[2]}"
}

engine() {
	cleanup
	# Half the three working sets (the curves of the whole traces,
	# offline), and the device that gains most from memory.
	foresight mrc $W/*.ftrace --json >$W/mrc.json || { fail "foresight mrc"; return 1; }
	local wss total share gainer
	wss=$(jq '[.devices[].working_set_mb] | add' $W/mrc.json)
	total=$(jq -n "$wss / 2 | floor")
	share=$((total / 3))
	total=$((share * 3))
	foresight mrc $W/*.ftrace --total-mb $total --json >$W/split.json
	gainer=$(jq -r '.devices | max_by(.throughput_mb - .equal_mb) | .name' $W/split.json)
	note "working sets $wss MiB; total $total MiB ($share each); offline throughput split: $(jq -r '[.devices[] | "\(.name) \(.throughput_mb)"] | join(", ")' $W/split.json); gains most: $gainer"
	foresight budget --cache-mb $total >/dev/null || { fail "budget $total"; return 1; }
	local n i=0
	for n in $NAMES; do
		dm create $n --table "0 $SIZE foresight ${ORIGINS[$i]} 0 2 cache_mb $share" || return 1
		i=$((i + 1))
	done
	# The replays start under fair (equal shares, as the caches are), the
	# engine sampling their curves; once each has read a tenth of its
	# trace, throughput is asked for.  (From a cold start, the evidence
	# the engine has after 10 s depends on how fast the guest replays:
	# on a loaded guest, a few percent of each trace.)
	foresight daemon $NAMES --engine fair --engine-kernel-cpus 1 \
		--state-file $STATE --log-file $LOG --duration 600 &
	DAEMON=$!
	# The replays start once the daemon listens (its start takes seconds
	# on a loaded guest).
	for i in $(seq 1 40); do
		grep -q " started: " $LOG 2>/dev/null && break
		sleep 0.25
	done
	grep -q " started: " $LOG || { fail "the daemon did not start: $(cat $LOG)"; return 1; }
	local t0=$SECONDS started
	started=$(date +%s.%N)
	for n in $NAMES; do
		foresight trace replay $W/$n.ftrace /dev/mapper/$n --speed 4 --json >$W/$n.replay 2>&1 &
	done
	# Sampled every second: the caches and what the kernel charges (two
	# tool runs and two jq each time: more would take the CPU the
	# replays and the daemon need).
	(
		while sleep 1; do
			echo "$((SECONDS - t0)) $(caches) $(charged)"
		done
	) >$W/samples &
	local sampler=$!
	local warm= want=()
	for n in $NAMES; do want+=($(($(grep -c ' R ' $W/$n.ftrace) / 10))); done
	# Read bios completed: status field 4.
	tenth() {
		local n i=0
		for n in $NAMES; do
			[ "$(st $n 4)" -ge "${want[$i]}" ] || return 1
			i=$((i + 1))
		done
	}
	for i in $(seq 1 240); do
		tenth && warm=true && break
		sleep 0.5
	done
	[ "$warm" = true ] || { fail "the replays did not read a tenth of their traces in 120 s"; return 1; }
	note "a tenth of each trace read (${want[*]} reads) after $((SECONDS - t0)) s"
	local lines
	lines=$(wc -l <$LOG)
	foresight policy engine throughput --state-file $STATE --wait-s 10 >/dev/null || fail "switch to throughput"
	local asked t1=$SECONDS
	asked=$(requested)
	# The decision that moves it (not one kept under the hysteresis),
	# watched in the daemon's log, then the cache it gave.
	local k moved= applied took c
	k=$(($(echo $NAMES | tr ' ' '\n' | grep -nx "$gainer" | cut -d: -f1) - 1))
	while [ $((SECONDS - t1)) -le 20 ]; do
		applied=$(logged_at "engine throughput: ([^;(]*; )*$gainer \+[0-9]+ MiB to [0-9]+, miss ratio" $lines)
		if [ -n "$applied" ]; then
			moved=$((SECONDS - t1))
			break
		fi
		sleep 0.5
	done
	# (The daemon logs a decision, then applies it.)
	for i in 1 2 3 4 5 6; do
		read -ra c <<<"$(caches)"
		[ "${c[$k]%.*}" -gt $share ] && break
		sleep 0.5
	done
	note "caches at $((SECONDS - t0)) s: ${c[*]} MiB"
	[ -n "$moved" ] && [ "${c[$k]%.*}" -gt $share ] ||
		fail "$gainer still has ${c[$k]} MiB $((SECONDS - t1)) s after the switch: ${c[*]}; $(grep engine $LOG | tail -4)"
	# By the daemon's clock, from the request.
	if [ -z "$applied" ]; then
		fail "no reason logged: $(grep engine $LOG | tail -3)"
	else
		took=$(secs_since "$asked" "$applied")
		note "memory moved to $gainer after $took s under throughput ($(secs_since "$started" "$applied") s from the replays' start): $(tail -n +$lines $LOG | grep 'engine throughput: ' | grep -v 'kept\|as it is' | head -1 | cut -d' ' -f2-)"
		awk -v t="$took" 'BEGIN { exit !(t >= 0 && t <= 10) }' ||
			fail "memory moved to $gainer after $took s: $(grep 'engine throughput' $LOG | head -6 | cut -c1-200)"
	fi
	foresight policy engine --state-file $STATE >$W/show || fail "policy engine (show)"
	grep -q "^engine throughput (total $total MiB" $W/show || fail "show: $(cat $W/show)"
	# Unprivileged: the daemon's files are root's.
	setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all \
		foresight policy engine fair --state-file $STATE >$W/nobody 2>&1 && fail "nobody switched the policy"
	# Switching: fair, at once (the daemon decides at its next push), by
	# the daemon's clock from the request, and from the tool's start.
	lines=$(wc -l <$LOG)
	t1=$(date +%s.%N)
	foresight policy engine fair --state-file $STATE --wait-s 10 >$W/fair || fail "switch to fair: $(cat $W/fair)"
	asked=$(requested)
	[ "$(caches)" = "$share $share $share" ] || fail "fair: $(caches)"
	local fair
	fair=$(logged_at 'engine fair: ' $lines)
	if [ -z "$fair" ]; then
		fail "no decision under fair logged: $(grep engine $LOG | tail -3)"
	else
		took=$(secs_since "$asked" "$fair")
		awk -v t="$took" 'BEGIN { exit !(t >= 0 && t <= 3) }' || fail "the switch took $took s (interval 3 s)"
	fi
	note "switch to fair: $took s from the request ($(secs_since "$t1" "$fair") s from the tool's start); caches $(caches) MiB"
	# The engine keeps the kernel's workers on CPU 1, a reloaded table's
	# new ones too (within one interval).
	foresight placement --json | jq -e 'length == 9 and all(.cpus == "1")' >/dev/null ||
		fail "placement: $(foresight placement --json)"
	local first=${NAMES%% *} lines
	lines=$(wc -l <$LOG)
	dm load $first --table "$(dmsetup table $first)" && dm suspend $first && dm resume $first || fail "reload"
	# Placed, and logged: the daemon writes its line just after the
	# queues' cpumask (a decision that came amid the table's creation
	# places them in two goes).
	local placed= logged=
	for i in $(seq 1 14); do
		[ -n "$placed" ] || { foresight placement $first --json | jq -e 'length == 3 and all(.cpus == "1")' >/dev/null && placed=1; }
		tail -n +$((lines + 1)) $LOG | grep -qE "engine: [0-9]+ workqueue\(s\) put on CPUs 1" && logged=1
		[ -n "$placed" ] && [ -n "$logged" ] && break
		sleep 0.5
	done
	[ -n "$placed" ] || fail "the reloaded table's queues: $(foresight placement $first --json)"
	[ -n "$logged" ] || fail "no placement logged: $(tail -n +$((lines + 1)) $LOG | grep engine: | tail -4)"
	# And the two others decide too.
	foresight policy engine latency --state-file $STATE --wait-s 10 >/dev/null || fail "switch to latency"
	foresight policy engine predicted --state-file $STATE --wait-s 10 >$W/predicted || fail "switch to predicted"
	note "predicted: caches $(caches) MiB; $(grep "last:" $W/predicted | cut -c1-200)"
	foresight policy engine off --state-file $STATE --wait-s 10 >/dev/null || fail "engine off"
	kill $sampler
	wait $sampler 2>/dev/null
	# Never over the total, together.
	local over
	over=$(awk -v t=$total '$2 + $3 + $4 > t || $5 > t' $W/samples)
	[ -z "$over" ] || fail "over $total MiB: $over"
	note "$(wc -l <$W/samples) samples, the most held $(awk '{s=$2+$3+$4; if (s>m) m=s} END{print m}' $W/samples) MiB"
	cleanup
}
check "three devices replaying the Tencent traces: under throughput the memory moves within 10 s to the device that gains most; switching the policy takes effect within one interval; never over the total" engine

# The daemon's model training (issue 14, point 3): its training threads in
# a threaded cgroup of their own with the host's model CPU budget (cpu.max)
# and CPUs (cpuset), the rest of the daemon not; a device gone quiet has
# its training paused.
training() {
	cleanup
	mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup || { fail "no cgroup2"; return 1; }
	local cg=/sys/fs/cgroup/fs-engine-test n=${NAMES%% *}
	dm create $n --table "0 $SIZE foresight ${ORIGINS[0]} 0 2 cache_mb 4" || return 1
	foresight daemon $n --predictor gru --training-cgroup $cg --model-cpu-pct 30 --model-cpus 1 \
		--train-min-rate 20 --state-file $STATE --log-file $W/training.log --duration 300 &
	DAEMON=$!
	foresight trace replay $W/$n.ftrace /dev/mapper/$n --speed 8 >/dev/null 2>&1 &
	local replay=$! tids= i
	for i in $(seq 1 40); do
		tids=$(grep -l '^foresight-gru$' /proc/$DAEMON/task/*/comm 2>/dev/null | cut -d/ -f5)
		[ -n "$tids" ] && break
		sleep 0.5
	done
	[ -n "$tids" ] || { fail "no training thread: $(tail -3 $W/training.log)"; return 1; }
	local t
	for t in $tids; do
		grep -qx "$t" $cg/training/cgroup.threads || fail "thread $t not in the training cgroup: $(cat $cg/training/cgroup.threads)"
		[ "$(awk '/^Cpus_allowed_list/ {print $2}' /proc/$DAEMON/task/$t/status)" = 1 ] ||
			fail "thread $t on CPUs $(awk '/^Cpus_allowed_list/ {print $2}' /proc/$DAEMON/task/$t/status)"
	done
	[ "$(cat $cg/training/cpu.max)" = "30000 100000" ] || fail "cpu.max $(cat $cg/training/cpu.max)"
	[ "$(cat $cg/training/cpuset.cpus)" = 1 ] || fail "cpuset.cpus $(cat $cg/training/cpuset.cpus)"
	grep -qx "$DAEMON" $cg/cgroup.procs || fail "the daemon is not in $cg"
	[ "$(awk '/^Cpus_allowed_list/ {print $2}' /proc/$DAEMON/status)" = 0-1 ] || fail "the daemon's main thread was restricted"
	note "training thread(s) $(echo $tids) in $cg/training: cpu.max $(cat $cg/training/cpu.max), cpus $(cat $cg/training/cpuset.cpus); $(grep 'training threads in' $W/training.log | cut -d' ' -f2-)"
	kill $replay 2>/dev/null
	wait $replay 2>/dev/null
	local paused=
	for i in $(seq 1 30); do
		grep -q "$n: quiet, training paused" $W/training.log && paused=1 && break
		sleep 0.5
	done
	[ -n "$paused" ] || fail "no pause once quiet: $(tail -3 $W/training.log)"
	note "$(grep -E 'training (paused|resumed)' $W/training.log | cut -d' ' -f2- | tr '\n' ';')"
	cleanup
	rmdir $cg/training $cg 2>/dev/null
	true
}
check "training threads in a cgroup with the model CPU budget and CPUs applied (two vCPUs); a quiet device's training paused" training

for i in 0 1 2; do nullb_remove eng$i; done
ktap_end
