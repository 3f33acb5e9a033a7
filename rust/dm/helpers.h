/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Out-of-line copies of the static inline functions and macros the Rust
 * device-mapper layer needs.  Each is a one-liner; see helpers.c.
 */
#ifndef FORESIGHT_DM_HELPERS_H
#define FORESIGHT_DM_HELPERS_H

#include <linux/device-mapper.h>

void foresight_bio_remap(struct bio *bio, struct block_device *bdev, sector_t sector);
sector_t foresight_bdev_nr_sectors(struct block_device *bdev);
dev_t foresight_bdev_dev(struct block_device *bdev);

#endif /* FORESIGHT_DM_HELPERS_H */
