/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Out-of-line copies of the static inline functions and macros the Rust
 * device-mapper layer needs.  Each is a one-liner; see helpers.c.
 */
#ifndef FORESIGHT_DM_HELPERS_H
#define FORESIGHT_DM_HELPERS_H

#include <linux/device-mapper.h>
#include <net/genetlink.h>

void foresight_bio_remap(struct bio *bio, struct block_device *bdev, sector_t sector);
sector_t foresight_bdev_nr_sectors(struct block_device *bdev);
dev_t foresight_bdev_dev(struct block_device *bdev);
dev_t foresight_target_md_dev(struct dm_target *ti);
void foresight_bio_copy_to(struct bio *bio, size_t offset, const void *buf, size_t len);
void foresight_bio_io_error(struct bio *bio);
u32 foresight_crc32c(const void *buf, size_t len);
int foresight_dm_name(dev_t dev, char *name);
unsigned int foresight_memalloc_noio_save(void);
void foresight_memalloc_noio_restore(unsigned int flags);
void foresight_suspended_lockdep_init(void);
void foresight_suspended_acquire(void);
void foresight_suspended_release(void);

/* Generic netlink. */
int foresight_genl_reply(struct sk_buff *skb, struct genl_info *info);
void *foresight_genl_put_reply(struct sk_buff *skb, struct genl_info *info, u8 cmd);
void *foresight_genl_put_dump(struct sk_buff *skb, struct netlink_callback *cb, u8 cmd);
struct nlattr **foresight_genl_dump_attrs(struct netlink_callback *cb);
void *foresight_genl_dump_ctx(struct netlink_callback *cb);
void foresight_genl_set_err(struct genl_info *info, const char *msg, int attr);
void foresight_genl_dump_set_err(struct netlink_callback *cb, const char *msg, int attr);
struct nlattr *foresight_nla_nest_start(struct sk_buff *skb, int attrtype);
void foresight_nla_nest_end(struct sk_buff *skb, struct nlattr *nest);
int foresight_genl_count(struct genl_info *info, int attrtype);
const struct nlattr *foresight_genl_nth(struct genl_info *info, int attrtype,
					 const struct nlattr *prev);
int foresight_nla_parse_nested(struct nlattr **tb, int maxtype, const struct nlattr *nla,
			       const struct nla_policy *policy, struct genl_info *info);

#endif /* FORESIGHT_DM_HELPERS_H */
