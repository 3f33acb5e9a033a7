#!/usr/bin/env bash
# fio verification through foresight, and table reload and suspend/resume
# while I/O runs.
. "$(dirname "$0")/../lib.sh"
ktap_begin "fio"

ORIGIN=/dev/ram0
SIZE=$(sectors $ORIGIN)

fio_verify() {
	dm create fs0 --table "0 $SIZE foresight $ORIGIN" || return 1
	fio --name=verify --filename=/dev/mapper/fs0 --direct=1 --ioengine=libaio \
		--rw=randwrite --bs=4k --iodepth=16 --size=32M --verify=crc32c \
		--do_verify=1 --verify_fatal=1 --randrepeat=0 --output-format=terse >/tmp/fio.out ||
		{ cat /tmp/fio.out; return 1; }
	grep -q 'verify' /tmp/fio.out && ! grep -qi 'error' /tmp/fio.out
	dm remove fs0
}
check "fio verify=crc32c random write then read" fio_verify

reload_under_io() {
	local pid i
	dm create fs0 --table "0 $SIZE foresight $ORIGIN" || return 1
	fio --name=live --filename=/dev/mapper/fs0 --direct=1 --ioengine=libaio \
		--rw=randwrite --bs=4k --iodepth=8 --size=16M --verify=crc32c \
		--do_verify=1 --verify_fatal=1 --loops=3 >/tmp/fio-live.out 2>&1 &
	pid=$!
	for i in 1 2 3 4 5; do
		sleep 1
		dm suspend fs0 || fail "suspend $i failed"
		dm resume fs0 || fail "resume $i failed"
		dm reload fs0 --table "0 $SIZE foresight $ORIGIN" || fail "reload $i failed"
		dm resume fs0 || fail "resume after reload $i failed"
	done
	wait $pid || { cat /tmp/fio-live.out; fail "fio failed across reloads"; }
	dm remove fs0
}
check "table reload and suspend/resume while fio runs" reload_under_io

check "no kernel warnings" dmesg_clean
ktap_end
