#!/usr/bin/env bash
# foreshadow's crash safety, with dm-log-writes.  The metadata and the
# destination are two partitions of one device whose writes are logged in
# completion order, while hydration runs and the VM writes and syncs.  The
# log is then replayed to every flush and FUA entry and to points between
# them: at each, every region marked hydrated holds its data (the source's,
# plus the VM's write to it if that write is in the replayed part), no write
# the VM had synced is lost, and a sample of the states loads as a device.
. "$(dirname "$0")/../lib.sh"
ktap_begin "foreshadow: crash states replayed from dm-log-writes"

W=/tmp/fs-shcrash
mkdir -p $W
REGION=128
META_SECTORS=2048 # 1 MiB
DST_SECTORS=32768 # 16 MiB: 256 regions
# A volatile write cache (cache_size): flushes and FUA reach the log.
BASE=$(nullb crbase 17 memory_backed=1 cache_size=4) || exit 1
LOGDEV=$(nullb crlog 128 memory_backed=1) || exit 1
SRC=$(nullb crsrc 16 memory_backed=1) || exit 1
SCRATCH=$(nullb crscratch 1 memory_backed=1) || exit 1
pattern $W/src 16384 crash-source || exit 1
dd if=$W/src of=$SRC bs=1M oflag=direct status=none
# The VM's writes: 4 KiB at an odd 4 KiB of regions 3, 40, 41, 100, 200, 255.
WREGIONS="3 40 41 100 200 255"
pattern $W/writes 24 crash-writes || exit 1

teardown() {
	for d in crsh crdst crmeta crlw rsh rmeta rdst; do
		dm remove $d 2>/dev/null
	done
	true
}

record() {
	teardown
	dm create crlw --table "0 $(sectors $BASE) log-writes $BASE $LOGDEV" || return 1
	dm create crmeta --table "0 $META_SECTORS linear /dev/mapper/crlw 0" || return 1
	dm create crdst --table "0 $DST_SECTORS linear /dev/mapper/crlw $META_SECTORS" || return 1
	dm message crlw 0 mark start || return 1
	dm create crsh --table "0 $DST_SECTORS foreshadow /dev/mapper/crmeta /dev/mapper/crdst $SRC $REGION 0 2 bandwidth_kbps 2048" ||
		return 1
	local k=0 r
	for r in $WREGIONS; do
		# A synchronous write (FUA or a flush), then a mark in the log.
		dd if=$W/writes of=/dev/mapper/crsh bs=4k skip=$k count=1 seek=$((r * 16 + 5)) \
			oflag=direct,sync status=none || return 1
		dm message crlw 0 mark "w$k" || return 1
		k=$((k + 1))
		sleep 0.5
	done
	# Hydration goes on; the table goes (a suspend: a final commit).
	sleep 2
	dm remove crsh || return 1
	dm remove crdst && dm remove crmeta && dm remove crlw || return 1
	# For the record (and the note): the log's entries.
	"$(dirname "$0")/../logreplay" $LOGDEV --list >$W/entries || return 1
}

# The checker: replays the log in memory and judges every state.
check_states() {
	python3 - "$LOGDEV" "$W/src" "$W/writes" "$WREGIONS" "$W" <<'PY'
import struct, sys
log, srcf, writesf, wregions, out = sys.argv[1:6]
REGION = 128 * 512
META = 2048 * 512
src = open(srcf, "rb").read()
wdata = open(writesf, "rb").read()
wreg = [int(r) for r in wregions.split()]
# Write k: 4 KiB at byte (r * 16 + 5) * 4096 of the destination.
wpos = [r * REGION + 5 * 4096 for r in wreg]
base = bytearray(META + len(src))
f = open(log, "rb")
magic, version, n, bs = struct.unpack("<QQQI", f.read(28))
assert magic == 0x6A736677736872 and version == 1, "not a log"
ents = []
pos = bs
for i in range(n):
    f.seek(pos)
    sector, count, flags, dlen = struct.unpack("<QQQQ", f.read(32))
    mark = f.read(dlen).decode() if flags & 8 else ""
    pos += bs
    ents.append((sector * bs, count * bs, flags, mark, pos))
    if not flags & 4:
        pos += count * bs
durable_points = [i + 1 for i, e in enumerate(ents) if e[2] & 3]
points = set(durable_points)
for a, b in zip(durable_points, durable_points[1:]):
    if b - a > 1:
        points.add((a + b) // 2)
points.add(len(ents))
marks = {e[3]: i for i, e in enumerate(ents) if e[2] & 8}
applied = [None] * len(wreg)  # entry index at which write k's data landed
errors, judged, loads = [], 0, []
load_every = max(1, len(points) // 8)
sorted_points = sorted(points)
at = 0
def expected(r, upto):
    e = bytearray(src[r * REGION:(r + 1) * REGION])
    for k, rr in enumerate(wreg):
        if rr == r and applied[k] is not None and applied[k] < upto:
            o = wpos[k] - r * REGION
            e[o:o + 4096] = wdata[k * 4096:(k + 1) * 4096]
    return bytes(e)
for p_i, p in enumerate(sorted_points):
    while at < p:
        off, length, flags, mark, data_at = ents[at]
        if length and not flags & 8:
            if flags & 4:
                data = bytes(length)
            else:
                f.seek(data_at)
                data = f.read(length)
            base[off:off + length] = data
            for k, wp in enumerate(wpos):
                if off <= META + wp < off + length and not flags & 4:
                    if data[META + wp - off:META + wp - off + 4096] == wdata[k * 4096:(k + 1) * 4096]:
                        applied[k] = at
        at += 1
    meta = base[:META]
    dst = base[META:]
    sb = meta[:48]
    if any(sb):
        if struct.unpack("<Q", sb[:8])[0] != int.from_bytes(b"FSHADOW1", "little"):
            errors.append(f"state {p}: a superblock that is not ours")
            continue
    bitmap = meta[4096:4096 + 32]
    for r in range(256):
        if bitmap[r // 8] >> (r % 8) & 1:
            if bytes(dst[r * REGION:(r + 1) * REGION]) != expected(r, p):
                errors.append(f"state {p}: region {r} marked without its data")
    for k, r in enumerate(wreg):
        m = marks.get(f"w{k}")
        if m is not None and m < p:
            marked = bitmap[r // 8] >> (r % 8) & 1
            if not marked or bytes(dst[r * REGION:(r + 1) * REGION]) != expected(r, p):
                errors.append(f"state {p}: write {k} (region {r}) was synced before it and is lost")
    judged += 1
    if p_i % load_every == 0 or p == len(ents):
        open(f"{out}/meta.{p}", "wb").write(meta)
        open(f"{out}/dst.{p}", "wb").write(dst)
        loads.append(p)
print(f"entries {len(ents)} durable {len(durable_points)} states {judged} loads {' '.join(map(str, loads))}")
for e in errors[:20]:
    print("ERROR", e)
sys.exit(1 if errors else 0)
PY
}

states_are_consistent() {
	record || return 1
	check_states >$W/judged || fail "$(cat $W/judged)"
	note "$(head -1 $W/judged); log entries: $(grep -c . $W/entries), FLUSH $(grep -c FLUSH $W/entries), FUA $(grep -c FUA $W/entries)"
	grep -q "durable [1-9]" $W/judged || fail "no flush or FUA in the log: $(head -1 $W/judged)"
}

# A sample of the states loads as a device, with the hydrated count its
# bitmap says (past what reads since copied).
states_load() {
	local p n=0
	for p in $(head -1 $W/judged | sed 's/.*loads //'); do
		dd if=$W/meta.$p of=$SCRATCH bs=1M oflag=direct status=none || return 1
		dd if=$W/dst.$p of=$BASE bs=1M seek=1 oflag=direct status=none || return 1
		dm create rdst --table "0 $DST_SECTORS linear $BASE $META_SECTORS" || return 1
		if ! dm create rsh --table "0 $DST_SECTORS foreshadow $SCRATCH /dev/mapper/rdst $SRC $REGION 1 no_hydration"; then
			dm remove rdst
			fail "state $p does not load"
			continue
		fi
		local want
		want=$(python3 -c 'import sys; b=open(sys.argv[1],"rb").read()[4096:4128]; print(sum(bin(x).count("1") for x in b))' $W/meta.$p)
		# udev's probe of the new device reads a few regions, which are
		# then copied (urgent): the loaded ones are the others.
		local line
		line=$(dm status rsh)
		[ "$(echo "$line" | awk '{split($5, h, "/"); print h[1] - $7 "/" h[2]}')" = "$want/256" ] ||
			fail "state $p: $line, its bitmap has $want"
		dm remove rsh
		dm remove rdst
		n=$((n + 1))
	done
	[ $n -ge 2 ] || fail "only $n states loaded"
	note "$n states loaded"
}

check "every flush/FUA state and states between them: marked regions hold their data, synced writes stay" states_are_consistent
check "a sample of the crash states loads, with the hydrated count of its bitmap" states_load
teardown
for n in crbase crlog crsrc crscratch; do
	nullb_remove $n
done
ktap_end
