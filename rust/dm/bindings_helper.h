/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The C side that rust/dm/bindings.rs is generated from.
 */
#include <linux/device-mapper.h>
#include <linux/dm-io.h>
#include "helpers.h"
#include "foresight-nl.h"
