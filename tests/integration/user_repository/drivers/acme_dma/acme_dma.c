// SPDX-License-Identifier: GPL-2.0
/*
 * acme_dma: a user's own dmaengine client, built out of tree by cosim from the user's repository.
 * Writing a length to /dev/acme-dma copies that many bytes with a memcpy channel between two
 * coherent buffers and checks them; the write fails with the copy's error.
 */
#include <linux/completion.h>
#include <linux/dma-mapping.h>
#include <linux/dmaengine.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/sizes.h>
#include <linux/string.h>
#include <linux/uaccess.h>

static unsigned int seed = 0x5a;
module_param(seed, uint, 0444);
MODULE_PARM_DESC(seed, "first byte of the pattern copied");

static struct dma_chan *chan;
static DEFINE_MUTEX(lock);

static void copy_done(void *completion)
{
	complete(completion);
}

static int copy_once(size_t len)
{
	struct device *dev = chan->device->dev;
	struct dma_async_tx_descriptor *tx;
	DECLARE_COMPLETION_ONSTACK(done);
	dma_addr_t src_dma, dst_dma;
	u8 *src, *dst;
	size_t i;
	int ret = 0;

	src = dma_alloc_coherent(dev, len, &src_dma, GFP_KERNEL);
	dst = dma_alloc_coherent(dev, len, &dst_dma, GFP_KERNEL);
	if (!src || !dst) {
		ret = -ENOMEM;
		goto out;
	}
	for (i = 0; i < len; i++) {
		src[i] = (u8)(seed + i * 7);
		dst[i] = 0;
	}
	tx = dmaengine_prep_dma_memcpy(chan, dst_dma, src_dma, len,
				       DMA_PREP_INTERRUPT | DMA_CTRL_ACK);
	if (!tx) {
		ret = -EIO;
		goto out;
	}
	tx->callback = copy_done;
	tx->callback_param = &done;
	if (dma_submit_error(dmaengine_submit(tx))) {
		ret = -EIO;
		goto out;
	}
	dma_async_issue_pending(chan);
	if (!wait_for_completion_timeout(&done, msecs_to_jiffies(10000))) {
		dmaengine_terminate_sync(chan);
		ret = -ETIMEDOUT;
		goto out;
	}
	if (memcmp(src, dst, len))
		ret = -EILSEQ;
out:
	if (dst)
		dma_free_coherent(dev, len, dst, dst_dma);
	if (src)
		dma_free_coherent(dev, len, src, src_dma);
	return ret;
}

static ssize_t acme_write(struct file *file, const char __user *buf, size_t count, loff_t *pos)
{
	char text[24];
	unsigned long len;
	int ret;

	if (count >= sizeof(text))
		return -EINVAL;
	if (copy_from_user(text, buf, count))
		return -EFAULT;
	text[count] = 0;
	ret = kstrtoul(strim(text), 0, &len);
	if (ret)
		return ret;
	if (!len || len > SZ_4M)
		return -EINVAL;
	mutex_lock(&lock);
	ret = copy_once(len);
	mutex_unlock(&lock);
	return ret ? ret : count;
}

static const struct file_operations acme_fops = {
	.owner = THIS_MODULE,
	.write = acme_write,
};

static struct miscdevice acme_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "acme-dma",
	.fops = &acme_fops,
};

static int __init acme_init(void)
{
	dma_cap_mask_t mask;
	int ret;

	dma_cap_zero(mask);
	dma_cap_set(DMA_MEMCPY, mask);
	chan = dma_request_channel(mask, NULL, NULL);
	if (!chan)
		return -ENODEV;
	ret = misc_register(&acme_misc);
	if (ret) {
		dma_release_channel(chan);
		return ret;
	}
	pr_info("acme_dma: copying with %s (seed %#x)\n", dma_chan_name(chan), seed);
	return 0;
}

static void __exit acme_exit(void)
{
	misc_deregister(&acme_misc);
	dma_release_channel(chan);
}

module_init(acme_init);
module_exit(acme_exit);
MODULE_DESCRIPTION("A user's dmaengine memcpy client");
MODULE_LICENSE("GPL");
