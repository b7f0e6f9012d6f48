// SPDX-License-Identifier: GPL-2.0
/*
 * Driver for cosim's "cosim,dma-fifo" test peripheral: moves data through the DMA controller's
 * slave paths as UART, SPI and audio drivers do — slave scatter-gather both ways and cyclic
 * DMA with a callback per period — using the channels the device tree names ("rx", "tx").
 *
 * /sys/kernel/debug/cosim-dma-fifo/<device>/control:
 *   echo "tx LEN NSEG SEED" > control   LEN bytes in NSEG pieces to the device; data byte i is
 *                                       (SEED + 7 * i) & 0xff so the host can check it
 *   echo "rx LEN NSEG SEED" > control   LEN bytes from the device, checked against that pattern
 *   echo "cyclic PERIOD COUNT" > control  cyclic reception until COUNT periods have completed
 *   echo "txw WIDTH LEN NSEG SEED" > control  "tx" with the channel set to WIDTH-byte accesses:
 *                                       a driver bug when WIDTH is not the FIFO's 4 bytes
 *   cat control                         the last result
 * LEN and the pieces are multiples of 16 bytes: the device asks for 4-word bursts.
 */

#include <linux/atomic.h>
#include <linux/completion.h>
#include <linux/debugfs.h>
#include <linux/dma-mapping.h>
#include <linux/dmaengine.h>
#include <linux/io.h>
#include <linux/module.h>
#include <linux/mod_devicetable.h>
#include <linux/mutex.h>
#include <linux/platform_device.h>
#include <linux/prandom.h>
#include <linux/scatterlist.h>
#include <linux/slab.h>

#include "cosim_control.h"

#define REG_DATA	0x00
#define REG_CTRL	0x08
#define CTRL_RX_DMA	BIT(0)
#define CTRL_TX_DMA	BIT(1)
#define UNIT		16
#define MAX_SEG		16
#define RESULT_LEN	256

struct fifo_dev {
	struct device *dev;
	void __iomem *regs;
	struct dma_chan *rx, *tx;	/* held while an operation runs */
	phys_addr_t fifo;		/* the DATA register's bus address */
	struct mutex lock;
	struct dentry *debugfs;
	struct completion done;
	atomic_t periods;
	char result[RESULT_LEN];
};

static struct dentry *debugfs_root;

static void put_channels(struct fifo_dev *fd)
{
	dma_release_channel(fd->tx);
	dma_release_channel(fd->rx);
}

static void transfer_done(void *param)
{
	complete(param);
}

static u8 pattern(u32 seed, size_t i)
{
	return (seed + 7 * i) & 0xff;
}

static int run_sg(struct fifo_dev *fd, bool to_device, u32 len, u32 nseg, u32 seed)
{
	enum dma_data_direction dir = to_device ? DMA_TO_DEVICE : DMA_FROM_DEVICE;
	struct dma_chan *chan = to_device ? fd->tx : fd->rx;
	u32 ctrl = to_device ? CTRL_TX_DMA : CTRL_RX_DMA;
	struct dma_async_tx_descriptor *tx;
	u32 left = len, piece, i, mismatches = 0;
	struct scatterlist *sg;
	struct sg_table sgt;
	struct rnd_state rnd;
	size_t pos = 0;
	bool completed;
	int mapped, ret;
	u8 *buf;

	if (!len || len % UNIT || !nseg || nseg > MAX_SEG || nseg > len / UNIT)
		return -EINVAL;
	prandom_seed_state(&rnd, seed);
	if (sg_alloc_table(&sgt, nseg, GFP_KERNEL))
		return -ENOMEM;
	for_each_sg(sgt.sgl, sg, nseg, i) {
		u32 units_left = left / UNIT, segs_after = nseg - 1 - i;

		piece = i == nseg - 1 ? left :
			UNIT * (1 + prandom_u32_state(&rnd) % (units_left - segs_after));
		buf = kmalloc(piece, GFP_KERNEL);
		if (!buf) {
			ret = -ENOMEM;
			goto out_free;
		}
		for (u32 b = 0; b < piece; b++)
			buf[b] = to_device ? pattern(seed, pos + b) : 0;
		sg_set_buf(sg, buf, piece);
		pos += piece;
		left -= piece;
	}
	mapped = dma_map_sg(chan->device->dev, sgt.sgl, nseg, dir);
	if (!mapped) {
		ret = -ENOMEM;
		goto out_free;
	}
	tx = dmaengine_prep_slave_sg(chan, sgt.sgl, mapped,
				     to_device ? DMA_MEM_TO_DEV : DMA_DEV_TO_MEM, DMA_PREP_INTERRUPT);
	if (!tx) {
		ret = -EIO;
		goto out_unmap;
	}
	reinit_completion(&fd->done);
	tx->callback = transfer_done;
	tx->callback_param = &fd->done;
	writel(ctrl, fd->regs + REG_CTRL);
	dmaengine_submit(tx);
	dma_async_issue_pending(chan);
	completed = wait_for_completion_timeout(&fd->done, msecs_to_jiffies(10000));
	if (!completed)
		dmaengine_terminate_sync(chan);
	writel(0, fd->regs + REG_CTRL);
	ret = completed ? 0 : -ETIMEDOUT;
out_unmap:
	dma_unmap_sg(chan->device->dev, sgt.sgl, nseg, dir);
	if (!ret && !to_device) {
		pos = 0;
		for_each_sg(sgt.sgl, sg, nseg, i) {
			for (u32 b = 0; b < sg->length; b++)
				mismatches += ((u8 *)sg_virt(sg))[b] != pattern(seed, pos + b);
			pos += sg->length;
		}
		if (mismatches)
			ret = -EILSEQ;
	}
	snprintf(fd->result, RESULT_LEN, "%s len=%u nseg=%u seed=%u channel=%s status=%d mismatches=%u\n",
		 to_device ? "tx" : "rx", len, nseg, seed, dma_chan_name(chan), ret, mismatches);
out_free:
	for_each_sg(sgt.sgl, sg, nseg, i)
		if (sg_page(sg))
			kfree(sg_virt(sg));
	sg_free_table(&sgt);
	return ret;
}

static void period_done(void *param)
{
	struct fifo_dev *fd = param;

	atomic_inc(&fd->periods);
	complete(&fd->done);
}

/* Cyclic reception into a 4-period ring, as audio capture does, until COUNT periods are done. */
static int run_cyclic(struct fifo_dev *fd, u32 period, u32 count)
{
	struct dma_async_tx_descriptor *tx;
	size_t ring = 4 * (size_t)period;
	unsigned long deadline;
	dma_addr_t dma;
	void *buf;
	int ret = 0;

	if (!period || period % UNIT || !count)
		return -EINVAL;
	buf = dma_alloc_coherent(fd->rx->device->dev, ring, &dma, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	tx = dmaengine_prep_dma_cyclic(fd->rx, dma, ring, period, DMA_DEV_TO_MEM, DMA_PREP_INTERRUPT);
	if (!tx) {
		ret = -EIO;
		goto out;
	}
	atomic_set(&fd->periods, 0);
	reinit_completion(&fd->done);
	tx->callback = period_done;
	tx->callback_param = fd;
	writel(CTRL_RX_DMA, fd->regs + REG_CTRL);
	dmaengine_submit(tx);
	dma_async_issue_pending(fd->rx);
	deadline = jiffies + msecs_to_jiffies(10000);
	while (atomic_read(&fd->periods) < count && time_before(jiffies, deadline))
		wait_for_completion_timeout(&fd->done, msecs_to_jiffies(100));
	dmaengine_terminate_sync(fd->rx);
	writel(0, fd->regs + REG_CTRL);
	snprintf(fd->result, RESULT_LEN, "cyclic period=%u wanted=%u periods=%d channel=%s\n", period,
		 count, atomic_read(&fd->periods), dma_chan_name(fd->rx));
	if (atomic_read(&fd->periods) < count)
		ret = -ETIMEDOUT;
out:
	dma_free_coherent(fd->rx->device->dev, ring, buf, dma);
	return ret;
}

static int fifo_config(struct dma_chan *chan, phys_addr_t fifo, bool rx, u32 width)
{
	struct dma_slave_config cfg = {
		.direction = rx ? DMA_DEV_TO_MEM : DMA_MEM_TO_DEV,
		.src_addr = fifo,
		.dst_addr = fifo,
		.src_addr_width = width,
		.dst_addr_width = width,
		.src_maxburst = 4,
		.dst_maxburst = 4,
	};

	return dmaengine_slave_config(chan, &cfg);
}

/* The channels are held only while an operation runs, so dmatest can use every channel else. */
static int get_channels(struct fifo_dev *fd)
{
	int ret;

	fd->rx = dma_request_chan(fd->dev, "rx");
	if (IS_ERR(fd->rx))
		return PTR_ERR(fd->rx);
	fd->tx = dma_request_chan(fd->dev, "tx");
	if (IS_ERR(fd->tx)) {
		ret = PTR_ERR(fd->tx);
		dma_release_channel(fd->rx);
		return ret;
	}
	ret = fifo_config(fd->rx, fd->fifo, true, DMA_SLAVE_BUSWIDTH_4_BYTES);
	if (!ret)
		ret = fifo_config(fd->tx, fd->fifo, false, DMA_SLAVE_BUSWIDTH_4_BYTES);
	if (ret)
		put_channels(fd);
	return ret;
}

static ssize_t control_write(struct file *file, const char __user *ubuf, size_t count,
			     loff_t *ppos)
{
	struct fifo_dev *fd = file->private_data;
	char buf[64], op[8];
	u32 a, b, c = 0, d = 0;
	int ret, n;

	ret = cosim_copy_command(buf, sizeof(buf), ubuf, count);
	if (ret)
		return ret;
	n = sscanf(buf, "%7s %u %u %u %u", op, &a, &b, &c, &d);
	mutex_lock(&fd->lock);
	ret = get_channels(fd);
	if (ret)
		goto out;
	if (n == 4 && !strcmp(op, "tx"))
		ret = run_sg(fd, true, a, b, c);
	else if (n == 4 && !strcmp(op, "rx"))
		ret = run_sg(fd, false, a, b, c);
	else if (n == 3 && !strcmp(op, "cyclic"))
		ret = run_cyclic(fd, a, b);
	else if (n == 5 && !strcmp(op, "txw")) {
		ret = fifo_config(fd->tx, fd->fifo, false, a);
		if (!ret)
			ret = run_sg(fd, true, b, c, d);
	}
	else
		ret = -EINVAL;
	put_channels(fd);
out:
	mutex_unlock(&fd->lock);
	return ret ? ret : count;
}

static ssize_t control_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct fifo_dev *fd = file->private_data;

	return simple_read_from_buffer(ubuf, count, ppos, fd->result, strlen(fd->result));
}

static const struct file_operations control_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = control_read,
	.write = control_write,
	.llseek = default_llseek,
};

static int fifo_probe(struct platform_device *pdev)
{
	struct device *dev = &pdev->dev;
	struct fifo_dev *fd;
	struct resource *res;
	int ret;

	fd = devm_kzalloc(dev, sizeof(*fd), GFP_KERNEL);
	if (!fd)
		return -ENOMEM;
	fd->dev = dev;
	mutex_init(&fd->lock);
	init_completion(&fd->done);
	snprintf(fd->result, RESULT_LEN, "idle\n");
	fd->regs = devm_platform_get_and_ioremap_resource(pdev, 0, &res);
	if (IS_ERR(fd->regs))
		return PTR_ERR(fd->regs);
	fd->fifo = res->start + REG_DATA;
	ret = get_channels(fd);  /* the device tree's dmas must resolve: fail the probe otherwise */
	if (ret)
		return dev_err_probe(dev, ret, "no rx/tx DMA channels\n");
	dev_info(dev, "DMA channels rx %s, tx %s\n", dma_chan_name(fd->rx), dma_chan_name(fd->tx));
	put_channels(fd);
	fd->debugfs = debugfs_create_dir(dev_name(dev), debugfs_root);
	debugfs_create_file("control", 0600, fd->debugfs, fd, &control_fops);
	platform_set_drvdata(pdev, fd);
	return 0;
}

static void fifo_remove(struct platform_device *pdev)
{
	struct fifo_dev *fd = platform_get_drvdata(pdev);

	debugfs_remove_recursive(fd->debugfs);
}

static const struct of_device_id fifo_of_match[] = {
	{ .compatible = "cosim,dma-fifo" },
	{}
};
MODULE_DEVICE_TABLE(of, fifo_of_match);

static struct platform_driver fifo_driver = {
	.probe = fifo_probe,
	.remove = fifo_remove,
	.driver = {
		.name = "cosim-dma-fifo",
		.of_match_table = fifo_of_match,
	},
};

module_cosim_platform_driver(fifo_driver, "cosim-dma-fifo", debugfs_root);
MODULE_DESCRIPTION("Slave-DMA exerciser for the cosim dma-fifo test peripheral");
MODULE_LICENSE("GPL");
