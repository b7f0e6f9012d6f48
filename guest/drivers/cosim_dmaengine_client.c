// SPDX-License-Identifier: GPL-2.0
/*
 * A dmaengine client for provoking what the DMA controller does with a bad transfer.
 *
 *   echo "memcpy-to ADDRESS" > /sys/kernel/debug/cosim-dmaengine/control
 *   cat /sys/kernel/debug/cosim-dmaengine/control
 *
 * copies a page from a coherent buffer to bus address ADDRESS through any memcpy-capable channel
 * and reports what the client saw: the completion callback's result and the cookie status.
 */

#include <linux/completion.h>
#include <linux/debugfs.h>
#include <linux/dma-mapping.h>
#include <linux/dmaengine.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/slab.h>

#include "cosim_control.h"

#define RESULT_LEN 256

static struct dentry *debugfs_dir;
static DEFINE_MUTEX(lock);
static char result[RESULT_LEN] = "idle\n";

struct completion_state {
	struct completion done;
	enum dmaengine_tx_result result;
};

static void transfer_done(void *param, const struct dmaengine_result *res)
{
	struct completion_state *state = param;

	state->result = res ? res->result : DMA_TRANS_NOERROR;
	complete(&state->done);
}

static int memcpy_to(dma_addr_t address)
{
	struct completion_state state = { .result = DMA_TRANS_NOERROR };
	struct dma_async_tx_descriptor *tx;
	enum dma_status status;
	struct dma_chan *chan;
	dma_cap_mask_t mask;
	dma_addr_t src_dma;
	struct device *dev;
	dma_cookie_t cookie;
	bool completed;
	void *src;
	int ret = 0;

	dma_cap_zero(mask);
	dma_cap_set(DMA_MEMCPY, mask);
	chan = dma_request_channel(mask, NULL, NULL);
	if (!chan)
		return -ENODEV;
	dev = chan->device->dev;
	src = dma_alloc_coherent(dev, PAGE_SIZE, &src_dma, GFP_KERNEL);
	if (!src) {
		ret = -ENOMEM;
		goto out_release;
	}
	init_completion(&state.done);
	tx = dmaengine_prep_dma_memcpy(chan, address, src_dma, PAGE_SIZE, DMA_PREP_INTERRUPT);
	if (!tx) {
		ret = -EIO;
		goto out_free;
	}
	tx->callback_result = transfer_done;
	tx->callback_param = &state;
	cookie = dmaengine_submit(tx);
	dma_async_issue_pending(chan);
	completed = wait_for_completion_timeout(&state.done, msecs_to_jiffies(3000));
	status = dma_async_is_tx_complete(chan, cookie, NULL, NULL);
	if (!completed)
		dmaengine_terminate_sync(chan);
	snprintf(result, RESULT_LEN, "memcpy-to address=%#llx channel=%s completed=%d result=%d status=%d\n",
		 (unsigned long long)address, dma_chan_name(chan), completed, state.result, status);
out_free:
	dma_free_coherent(dev, PAGE_SIZE, src, src_dma);
out_release:
	dma_release_channel(chan);
	return ret;
}

static ssize_t control_write(struct file *file, const char __user *ubuf, size_t count,
			     loff_t *ppos)
{
	char buf[64];
	u64 address;
	int ret;

	ret = cosim_copy_command(buf, sizeof(buf), ubuf, count);
	if (ret)
		return ret;
	if (sscanf(buf, "memcpy-to %llx", &address) != 1)
		return -EINVAL;
	mutex_lock(&lock);
	ret = memcpy_to(address);
	mutex_unlock(&lock);
	return ret ? ret : count;
}

static ssize_t control_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	return cosim_read_result(&lock, result, ubuf, count, ppos);
}

static const struct file_operations control_fops = {
	.owner = THIS_MODULE,
	.read = control_read,
	.write = control_write,
	.llseek = default_llseek,
};

static int __init client_init(void)
{
	debugfs_dir = debugfs_create_dir("cosim-dmaengine", NULL);
	debugfs_create_file("control", 0600, debugfs_dir, NULL, &control_fops);
	return 0;
}

static void __exit client_exit(void)
{
	debugfs_remove_recursive(debugfs_dir);
}

module_init(client_init);
module_exit(client_exit);
MODULE_DESCRIPTION("dmaengine client that provokes DMA controller faults");
MODULE_LICENSE("GPL");
