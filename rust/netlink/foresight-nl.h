/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause) */
/* Do not edit directly, auto-generated from: */
/*	Documentation/netlink/specs/foresight.yaml */
/* YNL-GEN kernel header */
/* To regenerate run: tools/net/ynl/ynl-regen.sh */

#ifndef _LINUX_FORESIGHT_GEN_H
#define _LINUX_FORESIGHT_GEN_H

#include <net/netlink.h>
#include <net/genetlink.h>

#include <uapi/linux/foresight.h>

/* Common nested types */
extern const struct nla_policy foresight_range_nl_policy[FORESIGHT_A_RANGE_PROBABILITY + 1];

int foresight_nl_pre_doit(const struct genl_split_ops *ops,
			  struct sk_buff *skb, struct genl_info *info);
int foresight_nl_pre_dumpit(struct netlink_callback *cb);

int foresight_nl_dev_get_doit(struct sk_buff *skb, struct genl_info *info);
int foresight_nl_dev_get_dumpit(struct sk_buff *skb,
				struct netlink_callback *cb);
int foresight_nl_dirty_get_dumpit(struct sk_buff *skb,
				  struct netlink_callback *cb);
int foresight_nl_dirty_rotate_doit(struct sk_buff *skb, struct genl_info *info);
int foresight_nl_predict_doit(struct sk_buff *skb, struct genl_info *info);
int foresight_nl_policy_set_doit(struct sk_buff *skb, struct genl_info *info);
int foresight_nl_shadow_get_doit(struct sk_buff *skb, struct genl_info *info);
int foresight_nl_shadow_get_dumpit(struct sk_buff *skb,
				   struct netlink_callback *cb);
int foresight_nl_shadow_hint_doit(struct sk_buff *skb, struct genl_info *info);
int foresight_nl_budget_get_doit(struct sk_buff *skb, struct genl_info *info);
int foresight_nl_budget_set_doit(struct sk_buff *skb, struct genl_info *info);

enum {
	FORESIGHT_NLGRP_TRACE,
};

extern struct genl_family foresight_nl_family;

#endif /* _LINUX_FORESIGHT_GEN_H */
