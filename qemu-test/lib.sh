# shellcheck shell=bash
# Helpers for guest tests: KTAP output and test devices.  Sourced by every
# script in qemu-test/tests/, which runs inside the guest as root.

T_NUM=0
T_FAIL=0
T_LOG=$(mktemp)
# The KTAP stream: checks run with their output captured, notes go here.
exec 3>&1

# note TEXT: a KTAP diagnostic line, also from inside a check.
note() { echo "# $*" >&3; }

ktap_begin() {
	echo "KTAP version 1"
	echo "# $1"
}

# check DESCRIPTION COMMAND...: one KTAP result line for COMMAND's status.
check() {
	local desc=$1
	shift
	T_NUM=$((T_NUM + 1))
	T_FAILED=0
	local t0=$SECONDS p0
	p0=$(tasks_started)
	if "$@" >"$T_LOG" 2>&1 && [ $T_FAILED = 0 ]; then
		echo "ok $T_NUM $desc"
	else
		echo "not ok $T_NUM $desc"
		tail -n 25 "$T_LOG" | sed 's/^/# /'
		T_FAIL=$((T_FAIL + 1))
	fi
	# Where a guest run's time goes (make test runs under a time limit):
	# under emulation, starting a process costs a tenth of a second or
	# more, so the count of processes is the other half of the story.
	echo "# took $((SECONDS - t0)) s, $(tasks_since "$p0") processes"
}

# tasks_started: the last process id handed out; tasks_since ID: how many
# processes (and threads) were started since (ids wrap at pid_max).
tasks_started() { local a; read -r a a a a a </proc/loadavg; echo "$a"; }
tasks_since() {
	local now max
	now=$(tasks_started)
	read -r max </proc/sys/kernel/pid_max
	echo $(((now - $1 + max) % max))
}

ktap_end() {
	echo "1..$T_NUM"
	echo "# $T_NUM tests, $T_FAIL failed"
	rm -f "$T_LOG"
	[ $T_FAIL = 0 ]
}

# fail MESSAGE: print and fail (inside a check'ed function).  The check
# fails even if the function goes on and ends well.
fail() {
	echo "$*" >&2
	T_FAILED=1
	return 1
}

# Device helpers -----------------------------------------------------------


# dmsetup, waiting for udev; a remove retries while udev still probes the device.
dm() {
	if [ "$1" = remove ]; then
		shift
		dmsetup remove --retry "$@"
	else
		dmsetup "$@"
	fi
}

sectors() { blockdev --getsz "$1"; }

# st DEV N: field N of the device's status line (as awk counts).
# (Without awk: a process less, in loops that poll it.)
st() {
	local line f
	line=$(dmsetup status "$1") || return
	read -ra f <<<"$line"
	echo "${f[$2 - 1]}"
}

# extents DEV cur|prev FILE: the dirty extents of an epoch.
extents() { dm message "$1" 0 dirty extents "$2" >"$3"; }

# nullb NAME SIZE_MB [ATTR=VALUE...]: a null_blk device through configfs;
# prints its /dev path (null_blk names the disk after the configfs item).
nullb() {
	local name=$1 size=$2 d
	shift 2
	d=/sys/kernel/config/nullb/$name
	mkdir "$d" || return 1
	echo "$size" >"$d/size"
	local kv
	for kv in "$@"; do
		echo "${kv#*=}" >"$d/${kv%%=*}" || return 1
	done
	echo 1 >"$d/power" || return 1
	local dev=/dev/$name i
	udevadm settle 2>/dev/null
	for i in $(seq 1 50); do
		[ -b "$dev" ] && break
		sleep 0.1
	done
	echo "$dev"
}

nullb_remove() {
	local d=/sys/kernel/config/nullb/$1
	[ -d "$d" ] || return 0
	echo 0 >"$d/power"
	rmdir "$d"
}

# verify_writers DEV OUT: two fio writers, each verifying its own 4 MiB of
# DEV (writers sharing blocks would see each other's data), for 15 s, in
# the background ($! is fio's); its report in OUT.
verify_writers() {
	fio --name=v --filename="$1" --size=4M --offset_increment=4M --direct=1 \
		--ioengine=libaio --rw=randrw --verify_state_save=0 \
		--bs=4k --iodepth=8 --numjobs=2 --verify=crc32c --verify_fatal=1 --do_verify=1 \
		--time_based --runtime=15 --group_reporting --output="$2" &
}

# writer_bg DEV BS SPAN_MIB IOPS: one process writing BS at random 4 KiB-
# aligned offsets of DEV's first SPAN_MIB MiB, IOPS a second (0: one at a
# time, as fast as DEV takes them), in the background until writer_end.
# (A shell loop of dd started a process per write, each 0.1 s or more of
# the guest's CPU.)
writer_bg() {
	local rate=()
	[ "$4" = 0 ] || rate=(--rate_iops="$4")
	fio --name=bgw --filename="$1" --rw=randwrite --bs="$2" --blockalign=4k --size="$3"M \
		--direct=1 --ioengine=psync --norandommap --time_based --runtime=3600 "${rate[@]}" \
		--output=/dev/null &
	WRITER_BG=$!
}
writer_end() {
	kill -INT "$WRITER_BG" 2>/dev/null
	wait "$WRITER_BG" 2>/dev/null
	return 0
}

# cache_identity DEV ORIGIN: after racing writers, DEV's cache served reads
# without a checksum mismatch, and DEV's first 8 MiB equal ORIGIN's.
cache_identity() {
	[ "$(st "$1" 25)" -gt 0 ] || fail "no read was served from the cache"
	[ "$(st "$1" 32)" = 0 ] || fail "verify mismatches: $(dm status "$1")"
	cmp <(dd if="$1" bs=4k count=2048 iflag=direct status=none) \
		<(dd if="$2" bs=4k count=2048 iflag=direct status=none) || fail "device and origin differ"
}

# pattern FILE SIZE_KIB SEED: a reproducible pseudo-random file.
pattern() {
	openssl enc -aes-128-ctr -pass "pass:$3" -nosalt -pbkdf2 </dev/zero 2>/dev/null |
		head -c $(($2 * 1024)) >"$1"
	[ "$(stat -c %s "$1")" = $(($2 * 1024)) ]
}

# kernel_reports: the lines of a kernel log (stdin) that are a detector's
# report: warnings and bugs (lockdep's and atomic-sleep's among them, KASAN's,
# soft lockups'), oopses, hung tasks, RCU stalls, leaks.  Prints them; fails
# if there are none.
# Lockdep turning itself off (after a taint) is a report too: the rest of
# the boot would run unchecked.
kernel_reports() {
	grep -aE 'WARNING:|BUG:|Oops|general protection|RIP:|Call Trace:|blocked for more than|detected stalls?|kmemleak:.*new suspected|unreferenced object|UBSAN:|INFO: (possible|inconsistent)|Disabling lock debugging'
}

# boot_reports: what the detectors reported before the first test's mark
# (a report at boot would also silence KASAN's and lockdep's later ones).
boot_reports() {
	dmesg | awk '/foresight-test: mark / { exit } { print }' | kernel_reports
}

# dmesg_clean: no detector reported anything since boot.
dmesg_clean() {
	! dmesg | kernel_reports
}

# kmsg_mark NAME: a line in the kernel log; kmsg_since NAME: the log after
# its last occurrence (the whole log if it scrolled out).
kmsg_mark() { echo "foresight-test: mark $1" >/dev/kmsg; }
kmsg_since() {
	dmesg | awk -v m="foresight-test: mark $1" 'index($0, m) { buf = ""; next } { buf = buf $0 "\n" } END { printf "%s", buf }'
}

# jiffies_now: the kernel's tick count (kmemleak stamps objects with it).
jiffies_now() { awk '/^jiffies:/ { print $2; exit }' /proc/timer_list; }

# leak_scripts "NAME:JIFFIES ..." [PATTERN]: reads a kmemleak report
# (stdin) and prints the names of the scripts (each started at its
# JIFFIES) during which its objects were allocated, once each; "earlier"
# for objects older than the first.  With PATTERN, only objects whose
# report (backtrace included) matches it.
leak_scripts() {
	awk -v starts="$1" -v pattern="${2:-}" '
		function judge() {
			if (obj == "" || (pattern != "" && obj !~ pattern) || !match(obj, /jiffies [0-9]+/))
				return
			j = substr(obj, RSTART + 8, RLENGTH - 8) + 0
			who = "earlier"
			for (i = 1; i <= n; i++) {
				c = index(s[i], ":")
				if (substr(s[i], c + 1) + 0 <= j)
					who = substr(s[i], 1, c - 1)
			}
			if (!(who in seen)) { seen[who] = 1; out = out (out == "" ? "" : " ") who }
		}
		BEGIN { n = split(starts, s, " ") }
		/unreferenced object/ { judge(); obj = "" }
		{ obj = obj $0 "\n" }
		END { judge(); print out }'
}

# kmemleak_new: scans for leaks now and prints what is suspected (then
# forgets it, so each leak is reported once).  Objects younger than 5 s are
# not reported yet: wait first for a script's last allocations.  Two scans:
# the first only records a new object's checksum (an object that changed
# since the last scan is never reported).
kmemleak_new() {
	local k=/sys/kernel/debug/kmemleak
	[ -w "$k" ] || return 0
	echo scan >"$k" 2>/dev/null
	echo scan >"$k" 2>/dev/null
	cat "$k" 2>/dev/null
	echo clear >"$k" 2>/dev/null
	return 0
}

# sleep SECONDS: a wait without a process (starting one costs 0.1 s or
# more in the test guest, and polling loops sleep thousands of times): a
# read, with a time limit, of a pipe nobody writes to.
exec {SLEEP_FD}<> <(:)
sleep() { read -rt "$1" -u "$SLEEP_FD" _ || :; }

# dmesg_mark / dmesg_since: the kernel log after a mark.
dmesg_mark() { DMESG_MARK=$(dmesg | wc -l); }
dmesg_since() { dmesg | tail -n +$((DMESG_MARK + 1)); }

# poll SECONDS COMMAND...: COMMAND every 0.1 s until it succeeds (status 0),
# for at most SECONDS; fails if it never did.
poll() {
	local i n=$(($1 * 10))
	shift
	for i in $(seq 1 $n); do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}

# nbd_serve DEV PORT [ro]: qemu-storage-daemon (QEMU's own NBD server)
# exports DEV as `disk` on 127.0.0.1:PORT, writable (discards passed down)
# or, with `ro`, read only; QSD is its pid.  nbd_unserve ends it (stopped
# or not).
nbd_serve() {
	local opts=cache.direct=on,discard=unmap w=on
	if [ "${3:-}" = ro ]; then
		opts=cache.direct=on,read-only=on
		w=off
	fi
	qemu-storage-daemon \
		--blockdev "driver=host_device,node-name=d,filename=$1,$opts" \
		--nbd-server "addr.type=inet,addr.host=127.0.0.1,addr.port=$2" \
		--export type=nbd,id=e,node-name=d,name=disk,writable=$w >/tmp/qsd-$2.log 2>&1 &
	QSD=$!
	poll 10 timeout 1 bash -c "</dev/tcp/127.0.0.1/$2" 2>/dev/null && return 0
	echo "qemu-storage-daemon did not listen: $(cat /tmp/qsd-$2.log)"
	return 1
}
nbd_unserve() {
	[ -n "${QSD:-}" ] || return 0
	kill -CONT "$QSD" 2>/dev/null
	kill "$QSD" 2>/dev/null
	wait "$QSD" 2>/dev/null
	QSD=
	return 0
}
