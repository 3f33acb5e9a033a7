// SPDX-License-Identifier: GPL-2.0
/*
 * Static inline kernel functions, made callable from Rust.
 */
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
