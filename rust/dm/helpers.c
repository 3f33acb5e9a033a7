// SPDX-License-Identifier: GPL-2.0
/*
 * Static inline kernel functions, made callable from Rust.
 */
#include <linux/crc32.h>
#include <linux/lockdep.h>
#include <linux/sched/mm.h>
#include "helpers.h"

void foresight_bio_remap(struct bio *bio, struct block_device *bdev, sector_t sector)
{
	bio_set_dev(bio, bdev);
	bio->bi_iter.bi_sector = sector;
}

sector_t foresight_bdev_nr_sectors(struct block_device *bdev)
{
	return bdev_nr_sectors(bdev);
}

dev_t foresight_bdev_dev(struct block_device *bdev)
{
	return bdev->bd_dev;
}

dev_t foresight_target_md_dev(struct dm_target *ti)
{
	return disk_devt(dm_disk(dm_table_get_md(ti->table)));
}

int foresight_dm_name(dev_t dev, char *name)
{
	struct mapped_device *md = dm_get_md(dev);
	int r;

	if (!md)
		return -ENXIO;
	r = dm_copy_name_and_uuid(md, name, NULL);
	dm_put(md);
	return r;
}

int foresight_genl_reply(struct sk_buff *skb, struct genl_info *info)
{
	return genlmsg_reply(skb, info);
}

void *foresight_genl_put_reply(struct sk_buff *skb, struct genl_info *info, u8 cmd)
{
	return genlmsg_put_reply(skb, info, info->family, 0, cmd);
}

void *foresight_genl_put_dump(struct sk_buff *skb, struct netlink_callback *cb, u8 cmd)
{
	const struct genl_info *info = genl_info_dump(cb);

	return genlmsg_put(skb, NETLINK_CB(cb->skb).portid, cb->nlh->nlmsg_seq,
			   info->family, NLM_F_MULTI, cmd);
}

struct nlattr **foresight_genl_dump_attrs(struct netlink_callback *cb)
{
	return genl_info_dump(cb)->attrs;
}

void *foresight_genl_dump_ctx(struct netlink_callback *cb)
{
	return cb->ctx;
}

/* NL_SET_ERR_MSG() for a message that is not a literal (a static string). */
static void set_err_msg(struct netlink_ext_ack *extack, const char *msg)
{
	if (extack)
		extack->_msg = msg;
}

void foresight_genl_set_err(struct genl_info *info, const char *msg, int attr)
{
	set_err_msg(info->extack, msg);
	if (attr > 0 && info->attrs[attr])
		NL_SET_BAD_ATTR(info->extack, info->attrs[attr]);
}

void foresight_genl_dump_set_err(struct netlink_callback *cb, const char *msg, int attr)
{
	const struct genl_info *info = genl_info_dump(cb);

	set_err_msg(cb->extack, msg);
	if (attr > 0 && info->attrs[attr])
		NL_SET_BAD_ATTR(cb->extack, info->attrs[attr]);
}

struct nlattr *foresight_nla_nest_start(struct sk_buff *skb, int attrtype)
{
	return nla_nest_start(skb, attrtype);
}

void foresight_nla_nest_end(struct sk_buff *skb, struct nlattr *nest)
{
	nla_nest_end(skb, nest);
}

int foresight_genl_count(struct genl_info *info, int attrtype)
{
	const struct nlattr *pos;
	int rem, n = 0;

	nlmsg_for_each_attr_type(pos, attrtype, info->nlhdr, GENL_HDRLEN, rem)
		n++;
	return n;
}

const struct nlattr *foresight_genl_nth(struct genl_info *info, int attrtype,
					 const struct nlattr *prev)
{
	const struct nlattr *pos;
	int rem;

	nlmsg_for_each_attr_type(pos, attrtype, info->nlhdr, GENL_HDRLEN, rem) {
		if (!prev)
			return pos;
		if (pos == prev)
			prev = NULL;
	}
	return NULL;
}

int foresight_nla_parse_nested(struct nlattr **tb, int maxtype, const struct nlattr *nla,
			       const struct nla_policy *policy, struct genl_info *info)
{
	return nla_parse_nested(tb, maxtype, nla, policy, info->extack);
}

/* Copies len bytes of buf into the data of bio, from byte offset on. */
void foresight_bio_copy_to(struct bio *bio, size_t offset, const void *buf, size_t len)
{
	struct bio_vec bv;
	struct bvec_iter iter;
	const char *from = buf;

	bio_for_each_segment(bv, bio, iter) {
		struct bio_vec part;
		size_t n;

		if (!len)
			break;
		if (offset >= bv.bv_len) {
			offset -= bv.bv_len;
			continue;
		}
		/*
		 * A copy of the segment: the iterator advances by bv.bv_len, so
		 * bv itself must not change.
		 */
		n = min_t(size_t, bv.bv_len - offset, len);
		part = bv;
		part.bv_offset += offset;
		part.bv_len = n;
		memcpy_to_bvec(&part, from);
		from += n;
		len -= n;
		offset = 0;
	}
}

u32 foresight_crc32c(const void *buf, size_t len)
{
	return crc32c(~0, buf, len);
}

unsigned int foresight_memalloc_noio_save(void)
{
	return memalloc_noio_save();
}

void foresight_memalloc_noio_restore(unsigned int flags)
{
	memalloc_noio_restore(flags);
}

/*
 * While a device is suspended, memory reclaim that writes back through it
 * waits until it resumes: to lockdep, the suspension is a lock that reclaim
 * takes (the order fs_reclaim -> foresight_suspended is recorded once, at
 * registration), so an allocation that may do I/O inside a suspend hook is
 * reported as a lock-order inversion, with both stacks.
 */
#ifdef CONFIG_LOCKDEP
static struct lock_class_key foresight_suspended_key;
static struct lockdep_map foresight_suspended_map =
	STATIC_LOCKDEP_MAP_INIT("foresight_suspended", &foresight_suspended_key);

void foresight_suspended_lockdep_init(void)
{
	fs_reclaim_acquire(GFP_KERNEL);
	lock_map_acquire(&foresight_suspended_map);
	lock_map_release(&foresight_suspended_map);
	fs_reclaim_release(GFP_KERNEL);
}

void foresight_suspended_acquire(void)
{
	lock_map_acquire(&foresight_suspended_map);
}

void foresight_suspended_release(void)
{
	lock_map_release(&foresight_suspended_map);
}
#else
void foresight_suspended_lockdep_init(void) {}
void foresight_suspended_acquire(void) {}
void foresight_suspended_release(void) {}
#endif

void foresight_bio_io_error(struct bio *bio)
{
	bio_io_error(bio);
}
