// SPDX-License-Identifier: GPL-2.0
/*
 * cosim-share: a region of guest RAM that the harness reads and writes directly (board.push()
 * and board.pull()), seen by the guest as /dev/cosim-share.  Guest RAM is a file the harness
 * maps, so moving 16 MiB in is a memory copy on the host and a read of this device in the
 * guest.  The device tree reserves the region (no-map): the kernel never uses it otherwise.
 */
#include <linux/fs.h>
#include <linux/io.h>
#include <linux/math64.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/of.h>
#include <linux/of_address.h>
#include <linux/platform_device.h>
#include <linux/sched/clock.h>
#include <asm/arch_timer.h>

struct cosim_share {
	void *base;
	size_t size;
	struct miscdevice misc;
};

static struct cosim_share *share_of(struct file *file)
{
	return container_of(file->private_data, struct cosim_share, misc);
}

static ssize_t share_read(struct file *file, char __user *buf, size_t count, loff_t *pos)
{
	struct cosim_share *s = share_of(file);

	return simple_read_from_buffer(buf, count, pos, s->base, s->size);
}

static ssize_t share_write(struct file *file, const char __user *buf, size_t count, loff_t *pos)
{
	struct cosim_share *s = share_of(file);

	if (*pos >= s->size && count)
		return -ENOSPC;
	return simple_write_to_buffer(s->base, s->size, pos, buf, count);
}

static const struct file_operations share_fops = {
	.owner = THIS_MODULE,
	.read = share_read,
	.write = share_write,
	.llseek = default_llseek,
};

/*
 * The guest's clock (sched_clock: printk and trace timestamps) against the virtual counter, which
 * counts QEMU's virtual clock, read together: the harness places a DMA it saw among the guest's
 * trace events by it.
 */
static void share_log_clock(struct device *dev)
{
	unsigned long flags;
	u64 counter, sched;

	local_irq_save(flags);
	counter = __arch_counter_get_cntvct();
	sched = local_clock();
	local_irq_restore(flags);
	dev_info(dev, "clock: sched_clock %llu ns at virtual counter %llu ns\n", sched,
		 mul_u64_u32_div(counter, NSEC_PER_SEC, arch_timer_get_cntfrq()));
}

static int share_probe(struct platform_device *pdev)
{
	struct device_node *region = of_parse_phandle(pdev->dev.of_node, "memory-region", 0);
	struct cosim_share *s;
	struct resource res;
	int ret;

	if (!region)
		return dev_err_probe(&pdev->dev, -ENODEV, "no memory-region\n");
	ret = of_address_to_resource(region, 0, &res);
	of_node_put(region);
	if (ret)
		return ret;
	s = devm_kzalloc(&pdev->dev, sizeof(*s), GFP_KERNEL);
	if (!s)
		return -ENOMEM;
	s->size = resource_size(&res);
	s->base = devm_memremap(&pdev->dev, res.start, s->size, MEMREMAP_WB);
	if (IS_ERR(s->base))
		return PTR_ERR(s->base);
	s->misc.minor = MISC_DYNAMIC_MINOR;
	s->misc.name = "cosim-share";
	s->misc.fops = &share_fops;
	s->misc.parent = &pdev->dev;
	platform_set_drvdata(pdev, s);
	ret = misc_register(&s->misc);
	if (ret)
		return ret;
	dev_info(&pdev->dev, "%zu MiB at %pa\n", s->size >> 20, &res.start);
	share_log_clock(&pdev->dev);
	return 0;
}

static void share_remove(struct platform_device *pdev)
{
	struct cosim_share *s = platform_get_drvdata(pdev);

	misc_deregister(&s->misc);
}

static const struct of_device_id share_of_match[] = {
	{ .compatible = "cosim,share" },
	{ }
};
MODULE_DEVICE_TABLE(of, share_of_match);

static struct platform_driver share_driver = {
	.probe = share_probe,
	.remove = share_remove,
	.driver = {
		.name = "cosim-share",
		.of_match_table = share_of_match,
	},
};
module_platform_driver(share_driver);

MODULE_DESCRIPTION("cosim: a region of guest RAM the harness reads and writes");
MODULE_LICENSE("GPL");
