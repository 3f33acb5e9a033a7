// SPDX-License-Identifier: GPL-2.0
/*
 * foresight_faults: one deliberate fault per kernel detector, so that the
 * test harness can show it catches each one (qemu-test/detectors).
 *
 *   insmod foresight_faults.ko fault=<name> [seconds=N]
 *
 * runs the fault in module init and stays loaded.  Faults:
 *   atomic-sleep  a GFP_KERNEL allocation with a spinlock held
 *                 (DEBUG_ATOMIC_SLEEP)
 *   lockdep       take two locks in both orders (PROVE_LOCKING)
 *   softlockup    spin with preemption off for N s (soft-lockup detector)
 *   rcu-stall     spin in an RCU read section, preemption off (RCU stall)
 *   hung-task     sleep uninterruptibly for N s (hung-task detector)
 *   leak          allocate and forget 256 x 256 bytes, 4 x 16 KiB
 *                 kmalloc'ed and 4 x 16 KiB vmalloc'ed (kmemleak)
 *   kasan         read one byte past a 16-byte allocation (KASAN)
 *   none          nothing (the negative control)
 * Test-only: never built into dm-foresight.
 */
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/vmalloc.h>

static char *fault = "none";
module_param(fault, charp, 0444);
MODULE_PARM_DESC(fault, "the fault to commit at load");
static int seconds = 5;
module_param(seconds, int, 0444);
MODULE_PARM_DESC(seconds, "how long a lockup, stall or hang lasts");

static DEFINE_SPINLOCK(lock_a);
static DEFINE_MUTEX(mutex_a);
static DEFINE_MUTEX(mutex_b);
static unsigned long leak_sum;

/* Allocates 256 bytes and forgets them. */
static noinline void leak_one(size_t size, bool virt)
{
	char *p = virt ? vmalloc(size) : kmalloc(size, GFP_KERNEL);

	if (p)
		memset(p, 0x5a, size);
}

/*
 * Overwrites the stack below the caller, where the leaked pointers were
 * spilled: kmemleak scans task stacks and would find them there.
 */
static noinline void scrub_stack(void)
{
	volatile char buf[1536];

	memset((char *)buf, 0, sizeof(buf));
}

static void spin_for(int s)
{
	unsigned long end = jiffies + s * HZ;

	while (time_before(jiffies, end))
		cpu_relax();
}

static int __init faults_init(void)
{
	pr_info("foresight_faults: committing '%s'\n", fault);
	if (!strcmp(fault, "atomic-sleep")) {
		void *p;

		spin_lock(&lock_a);
		p = kmalloc(64, GFP_KERNEL);
		spin_unlock(&lock_a);
		kfree(p);
	} else if (!strcmp(fault, "lockdep")) {
		mutex_lock(&mutex_a);
		mutex_lock(&mutex_b);
		mutex_unlock(&mutex_b);
		mutex_unlock(&mutex_a);
		mutex_lock(&mutex_b);
		mutex_lock(&mutex_a);
		mutex_unlock(&mutex_a);
		mutex_unlock(&mutex_b);
	} else if (!strcmp(fault, "softlockup")) {
		preempt_disable();
		spin_for(seconds);
		preempt_enable();
	} else if (!strcmp(fault, "rcu-stall")) {
		rcu_read_lock();
		preempt_disable();
		spin_for(seconds);
		preempt_enable();
		rcu_read_unlock();
	} else if (!strcmp(fault, "hung-task")) {
		schedule_timeout_uninterruptible(seconds * HZ);
	} else if (!strcmp(fault, "leak")) {
		int i;

		/*
		 * Many: the allocator's per-CPU arrays of free objects keep
		 * stale pointers to the last ones handed out, which kmemleak
		 * counts as references.
		 */
		for (i = 0; i < 256; i++)
			leak_one(256, false);
		for (i = 0; i < 4; i++) {
			leak_one(16384, false);
			leak_one(16384, true);
		}
		scrub_stack();
	} else if (!strcmp(fault, "kasan")) {
		volatile char *p = kmalloc(16, GFP_KERNEL);

		if (p) {
			leak_sum += p[16];
			kfree((void *)p);
		}
	} else if (strcmp(fault, "none")) {
		pr_err("foresight_faults: unknown fault '%s'\n", fault);
		return -EINVAL;
	}
	return 0;
}

static void __exit faults_exit(void)
{
}

module_init(faults_init);
module_exit(faults_exit);
MODULE_DESCRIPTION("Deliberate faults for dm-foresight's test harness");
MODULE_LICENSE("GPL");
