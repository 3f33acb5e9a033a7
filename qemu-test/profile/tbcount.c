// SPDX-License-Identifier: GPL-2.0
/*
 * A QEMU TCG plugin for `make profile`: counts the guest instructions each
 * translation block executes.  Kernel blocks are kept by address, user
 * space is one bucket.  When the guest executes `xchg %rbx,%rbx` (the
 * `mark` program), the counts so far are written to OUT.N (N = 0, 1, ...),
 * and at exit to OUT: a run's instructions are the difference between the
 * marks around it.
 *
 * Debian 12's QEMU 7.2 has plugin support but ships no plugin header, so
 * the few functions of plugin API version 1 used here are declared below.
 */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS };
typedef void (*tb_trans_cb)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*udata_cb)(qemu_plugin_id_t id, void *userdata);
typedef void (*insn_cb)(unsigned int vcpu, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb cb);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op,
					      void *ptr, uint64_t imm);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, insn_cb cb,
					    enum qemu_plugin_cb_flags flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

/* Blocks, by (address, length): an open-addressing table that never moves
 * an entry, so generated code can add to its counter in place. */
#define CAP (1u << 22)
struct block {
	uint64_t key; /* 0: empty */
	uint64_t vaddr;
	uint64_t insns;
	uint64_t execs;
};
static struct block *blocks;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static const char *out = "tbcount.out";
static int marks;

static void dump(const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f)
		return;
	for (uint64_t i = 0; i < CAP; i++)
		if (blocks[i].execs)
			fprintf(f, "%016llx %llu %llu\n", (unsigned long long)blocks[i].vaddr,
				(unsigned long long)blocks[i].insns,
				(unsigned long long)blocks[i].execs);
	fclose(f);
}

static void mark(unsigned int vcpu, void *udata)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s.%d", out, marks++);
	dump(path);
}

static void at_exit(qemu_plugin_id_t id, void *udata)
{
	dump(out);
}

static void translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	uint64_t va = qemu_plugin_tb_vaddr(tb);
	uint64_t n = qemu_plugin_tb_n_insns(tb);

	if (va < 0xffff000000000000ULL)
		va = 0;
	uint64_t key = ((va ^ (n << 1)) | 1);
	uint64_t h = (key * 0x9E3779B97F4A7C15ULL) >> 42;

	pthread_mutex_lock(&lock);
	while (blocks[h].key && blocks[h].key != key)
		h = (h + 1) & (CAP - 1);
	if (!blocks[h].key) {
		blocks[h].key = key;
		blocks[h].vaddr = va;
		blocks[h].insns = n;
	}
	pthread_mutex_unlock(&lock);
	qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &blocks[h].execs, 1);
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		const unsigned char *d = qemu_plugin_insn_data(insn);

		if (qemu_plugin_insn_size(insn) == 3 && d[0] == 0x48 && d[1] == 0x87 && d[2] == 0xdb)
			qemu_plugin_register_vcpu_insn_exec_cb(insn, mark, QEMU_PLUGIN_CB_NO_REGS, NULL);
	}
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
							       const qemu_info_t *info,
							       int argc, char **argv)
{
	for (int i = 0; i < argc; i++)
		if (!strncmp(argv[i], "out=", 4))
			out = strdup(argv[i] + 4);
	blocks = calloc(CAP, sizeof(*blocks));
	if (!blocks)
		return -1;
	qemu_plugin_register_vcpu_tb_trans_cb(id, translate);
	qemu_plugin_register_atexit_cb(id, at_exit, NULL);
	return 0;
}
