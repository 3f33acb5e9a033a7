// SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR BSD-3-Clause)
/* Do not edit directly, auto-generated from: */
/*	Documentation/netlink/specs/foresight.yaml */
/* YNL-GEN kernel source */
/* To regenerate run: tools/net/ynl/ynl-regen.sh */

#include <net/netlink.h>
#include <net/genetlink.h>

#include "foresight-nl.h"

#include <uapi/linux/foresight.h>

/* Integer value ranges */
static const struct netlink_range_validation foresight_a_range_probability_range = {
	.max	= FORESIGHT_PROBABILITY_ONE,
};

static const struct netlink_range_validation foresight_a_policy_cache_mb_range = {
	.max	= 65536ULL,
};

static const struct netlink_range_validation foresight_a_policy_critical_ppm_range = {
	.max	= FORESIGHT_PROBABILITY_ONE,
};

static const struct netlink_range_validation foresight_a_policy_predictive_ppm_range = {
	.max	= FORESIGHT_PROBABILITY_ONE,
};

static const struct netlink_range_validation foresight_a_policy_min_ppm_range = {
	.max	= FORESIGHT_PROBABILITY_ONE,
};

/* Common nested types */
const struct nla_policy foresight_range_nl_policy[FORESIGHT_A_RANGE_PROBABILITY + 1] = {
	[FORESIGHT_A_RANGE_START] = { .type = NLA_U64, },
	[FORESIGHT_A_RANGE_LENGTH] = NLA_POLICY_MIN(NLA_U64, 1),
	[FORESIGHT_A_RANGE_PROBABILITY] = NLA_POLICY_FULL_RANGE(NLA_U32, &foresight_a_range_probability_range),
};

/* FORESIGHT_CMD_DEV_GET - do */
static const struct nla_policy foresight_dev_get_nl_policy[FORESIGHT_A_DEV_DEV + 1] = {
	[FORESIGHT_A_DEV_NAME] = { .type = NLA_NUL_STRING, .len = FORESIGHT_NAME_LEN, },
	[FORESIGHT_A_DEV_DEV] = { .type = NLA_U32, },
};

/* FORESIGHT_CMD_DIRTY_GET - dump */
static const struct nla_policy foresight_dirty_get_nl_policy[FORESIGHT_A_DIRTY_EPOCH + 1] = {
	[FORESIGHT_A_DIRTY_NAME] = { .type = NLA_NUL_STRING, .len = FORESIGHT_NAME_LEN, },
	[FORESIGHT_A_DIRTY_DEV] = { .type = NLA_U32, },
	[FORESIGHT_A_DIRTY_EPOCH] = NLA_POLICY_MAX(NLA_U32, 1),
};

/* FORESIGHT_CMD_DIRTY_ROTATE - do */
static const struct nla_policy foresight_dirty_rotate_nl_policy[FORESIGHT_A_DIRTY_FORCE + 1] = {
	[FORESIGHT_A_DIRTY_NAME] = { .type = NLA_NUL_STRING, .len = FORESIGHT_NAME_LEN, },
	[FORESIGHT_A_DIRTY_DEV] = { .type = NLA_U32, },
	[FORESIGHT_A_DIRTY_EXPECT_EPOCH] = { .type = NLA_U64, },
	[FORESIGHT_A_DIRTY_CLAIM] = { .type = NLA_FLAG, },
	[FORESIGHT_A_DIRTY_FORCE] = { .type = NLA_FLAG, },
};

/* FORESIGHT_CMD_PREDICT - do */
static const struct nla_policy foresight_predict_nl_policy[FORESIGHT_A_PREDICT_RANGE + 1] = {
	[FORESIGHT_A_PREDICT_NAME] = { .type = NLA_NUL_STRING, .len = FORESIGHT_NAME_LEN, },
	[FORESIGHT_A_PREDICT_DEV] = { .type = NLA_U32, },
	[FORESIGHT_A_PREDICT_KIND] = NLA_POLICY_MAX(NLA_U32, 1),
	[FORESIGHT_A_PREDICT_HORIZON_MS] = NLA_POLICY_MIN(NLA_U32, 1),
	[FORESIGHT_A_PREDICT_RANGE] = NLA_POLICY_NESTED(foresight_range_nl_policy),
};

/* FORESIGHT_CMD_POLICY_SET - do */
static const struct nla_policy foresight_policy_set_nl_policy[FORESIGHT_A_POLICY_WRITE_KBPS + 1] = {
	[FORESIGHT_A_POLICY_NAME] = { .type = NLA_NUL_STRING, .len = FORESIGHT_NAME_LEN, },
	[FORESIGHT_A_POLICY_DEV] = { .type = NLA_U32, },
	[FORESIGHT_A_POLICY_LEVEL] = NLA_POLICY_MAX(NLA_U32, 100),
	[FORESIGHT_A_POLICY_ADAPTIVE] = NLA_POLICY_MAX(NLA_U8, 1),
	[FORESIGHT_A_POLICY_BASE] = { .type = NLA_U32, },
	[FORESIGHT_A_POLICY_W_IO] = { .type = NLA_U32, },
	[FORESIGHT_A_POLICY_W_DIRTY] = { .type = NLA_U32, },
	[FORESIGHT_A_POLICY_MIN_LEVEL] = NLA_POLICY_MAX(NLA_U32, 100),
	[FORESIGHT_A_POLICY_MAX_LEVEL] = NLA_POLICY_MAX(NLA_U32, 100),
	[FORESIGHT_A_POLICY_HYSTERESIS] = NLA_POLICY_MAX(NLA_U32, 100),
	[FORESIGHT_A_POLICY_PREDICT_TTL] = { .type = NLA_U32, },
	[FORESIGHT_A_POLICY_DENSE_PCT] = NLA_POLICY_MAX(NLA_U32, 100),
	[FORESIGHT_A_POLICY_INTERVAL_MS] = { .type = NLA_U32, },
	[FORESIGHT_A_POLICY_MAX_MEMORY_KB] = { .type = NLA_U32, },
	[FORESIGHT_A_POLICY_TRACE_RATE] = { .type = NLA_U32, },
	[FORESIGHT_A_POLICY_CACHE_MB] = NLA_POLICY_FULL_RANGE(NLA_U32, &foresight_a_policy_cache_mb_range),
	[FORESIGHT_A_POLICY_CRITICAL_PPM] = NLA_POLICY_FULL_RANGE(NLA_U32, &foresight_a_policy_critical_ppm_range),
	[FORESIGHT_A_POLICY_PREDICTIVE_PPM] = NLA_POLICY_FULL_RANGE(NLA_U32, &foresight_a_policy_predictive_ppm_range),
	[FORESIGHT_A_POLICY_MIN_PPM] = NLA_POLICY_FULL_RANGE(NLA_U32, &foresight_a_policy_min_ppm_range),
	[FORESIGHT_A_POLICY_PREFETCH_KBPS] = { .type = NLA_U32, },
	[FORESIGHT_A_POLICY_PREFETCH_INFLIGHT] = NLA_POLICY_RANGE(NLA_U32, 1, 256),
	[FORESIGHT_A_POLICY_LOAD_LIMIT] = { .type = NLA_U32, },
	[FORESIGHT_A_POLICY_IDLE_MS] = { .type = NLA_U32, },
	[FORESIGHT_A_POLICY_WRITE_KBPS] = { .type = NLA_U32, },
};

/* FORESIGHT_CMD_SHADOW_GET - do */
static const struct nla_policy foresight_shadow_get_nl_policy[FORESIGHT_A_SHADOW_DEV + 1] = {
	[FORESIGHT_A_SHADOW_NAME] = { .type = NLA_NUL_STRING, .len = FORESIGHT_NAME_LEN, },
	[FORESIGHT_A_SHADOW_DEV] = { .type = NLA_U32, },
};

/* FORESIGHT_CMD_SHADOW_HINT - do */
static const struct nla_policy foresight_shadow_hint_nl_policy[FORESIGHT_A_SHADOW_RANGE + 1] = {
	[FORESIGHT_A_SHADOW_NAME] = { .type = NLA_NUL_STRING, .len = FORESIGHT_NAME_LEN, },
	[FORESIGHT_A_SHADOW_DEV] = { .type = NLA_U32, },
	[FORESIGHT_A_SHADOW_RANGE] = NLA_POLICY_NESTED(foresight_range_nl_policy),
};

/* FORESIGHT_CMD_BUDGET_SET - do */
static const struct nla_policy foresight_budget_set_nl_policy[FORESIGHT_A_BUDGET_BANDWIDTH_TOTAL_KBPS + 1] = {
	[FORESIGHT_A_BUDGET_CACHE_TOTAL_MB] = { .type = NLA_U32, },
	[FORESIGHT_A_BUDGET_BANDWIDTH_TOTAL_KBPS] = { .type = NLA_U32, },
};

/* Ops table for foresight */
static const struct genl_split_ops foresight_nl_ops[] = {
	{
		.cmd		= FORESIGHT_CMD_DEV_GET,
		.pre_doit	= foresight_nl_pre_doit,
		.doit		= foresight_nl_dev_get_doit,
		.policy		= foresight_dev_get_nl_policy,
		.maxattr	= FORESIGHT_A_DEV_DEV,
		.flags		= GENL_CMD_CAP_DO,
	},
	{
		.cmd	= FORESIGHT_CMD_DEV_GET,
		.start	= foresight_nl_pre_dumpit,
		.dumpit	= foresight_nl_dev_get_dumpit,
		.flags	= GENL_CMD_CAP_DUMP,
	},
	{
		.cmd		= FORESIGHT_CMD_DIRTY_GET,
		.start		= foresight_nl_pre_dumpit,
		.dumpit		= foresight_nl_dirty_get_dumpit,
		.policy		= foresight_dirty_get_nl_policy,
		.maxattr	= FORESIGHT_A_DIRTY_EPOCH,
		.flags		= GENL_CMD_CAP_DUMP,
	},
	{
		.cmd		= FORESIGHT_CMD_DIRTY_ROTATE,
		.pre_doit	= foresight_nl_pre_doit,
		.doit		= foresight_nl_dirty_rotate_doit,
		.policy		= foresight_dirty_rotate_nl_policy,
		.maxattr	= FORESIGHT_A_DIRTY_FORCE,
		.flags		= GENL_CMD_CAP_DO,
	},
	{
		.cmd		= FORESIGHT_CMD_PREDICT,
		.pre_doit	= foresight_nl_pre_doit,
		.doit		= foresight_nl_predict_doit,
		.policy		= foresight_predict_nl_policy,
		.maxattr	= FORESIGHT_A_PREDICT_RANGE,
		.flags		= GENL_CMD_CAP_DO,
	},
	{
		.cmd		= FORESIGHT_CMD_POLICY_SET,
		.pre_doit	= foresight_nl_pre_doit,
		.doit		= foresight_nl_policy_set_doit,
		.policy		= foresight_policy_set_nl_policy,
		.maxattr	= FORESIGHT_A_POLICY_WRITE_KBPS,
		.flags		= GENL_CMD_CAP_DO,
	},
	{
		.cmd		= FORESIGHT_CMD_SHADOW_GET,
		.pre_doit	= foresight_nl_pre_doit,
		.doit		= foresight_nl_shadow_get_doit,
		.policy		= foresight_shadow_get_nl_policy,
		.maxattr	= FORESIGHT_A_SHADOW_DEV,
		.flags		= GENL_CMD_CAP_DO,
	},
	{
		.cmd	= FORESIGHT_CMD_SHADOW_GET,
		.start	= foresight_nl_pre_dumpit,
		.dumpit	= foresight_nl_shadow_get_dumpit,
		.flags	= GENL_CMD_CAP_DUMP,
	},
	{
		.cmd		= FORESIGHT_CMD_SHADOW_HINT,
		.pre_doit	= foresight_nl_pre_doit,
		.doit		= foresight_nl_shadow_hint_doit,
		.policy		= foresight_shadow_hint_nl_policy,
		.maxattr	= FORESIGHT_A_SHADOW_RANGE,
		.flags		= GENL_CMD_CAP_DO,
	},
	{
		.cmd		= FORESIGHT_CMD_BUDGET_GET,
		.pre_doit	= foresight_nl_pre_doit,
		.doit		= foresight_nl_budget_get_doit,
		.flags		= GENL_CMD_CAP_DO,
	},
	{
		.cmd		= FORESIGHT_CMD_BUDGET_SET,
		.pre_doit	= foresight_nl_pre_doit,
		.doit		= foresight_nl_budget_set_doit,
		.policy		= foresight_budget_set_nl_policy,
		.maxattr	= FORESIGHT_A_BUDGET_BANDWIDTH_TOTAL_KBPS,
		.flags		= GENL_CMD_CAP_DO,
	},
};

static const struct genl_multicast_group foresight_nl_mcgrps[] = {
	[FORESIGHT_NLGRP_TRACE] = { "trace", },
};

struct genl_family foresight_nl_family __ro_after_init = {
	.name		= FORESIGHT_FAMILY_NAME,
	.version	= FORESIGHT_FAMILY_VERSION,
	.netnsok	= true,
	.parallel_ops	= true,
	.module		= THIS_MODULE,
	.split_ops	= foresight_nl_ops,
	.n_split_ops	= ARRAY_SIZE(foresight_nl_ops),
	.mcgrps		= foresight_nl_mcgrps,
	.n_mcgrps	= ARRAY_SIZE(foresight_nl_mcgrps),
};
