// SPDX-License-Identifier: GPL-2.0
/*
 * The cache-model bug zoo: the classic non-coherent DMA mistakes, each beside its fixed twin,
 * moved by any memcpy-capable dmaengine channel (a PL330 on cosim's boards).
 *
 *   echo "CASE buggy" > /sys/kernel/debug/cosim-cache-zoo/control
 *   echo "CASE fixed" > /sys/kernel/debug/cosim-cache-zoo/control
 *   cat /sys/kernel/debug/cosim-cache-zoo/control     # "CASE MODE data=intact|corrupt ..."
 *
 * CASE: to-device-no-sync    the CPU writes a TO_DEVICE buffer after mapping it, no sync
 *       from-device-no-sync  the CPU reads a FROM_DEVICE buffer before syncing it for the CPU
 *       shared-line          a receive buffer shares its cache line with a field the CPU writes
 *                            during the transfer
 *       cpu-writes-owned     the CPU writes a buffer the device owns (mapped FROM_DEVICE)
 *       wrong-direction      a buffer the device writes is mapped DMA_TO_DEVICE
 *
 * Zero-copy from user space (the program cosim-zoo-mmap drives it):
 *   echo "mmap-prepare buggy|fixed" > control   a page for the device: a streaming page mapped
 *                                               DMA_TO_DEVICE that mmap gives user space with
 *                                               cacheable attributes (buggy), or a coherent
 *                                               buffer given by dma_mmap_coherent (fixed)
 *   mmap the file "buffer", fill it with cosim-zoo-mmap's pattern
 *   echo "mmap-send" > control                  the device copies the page out; data= says
 *                                               whether it carried the pattern
 *
 * "data" says whether the CPU finally saw what the device was meant to move: on coherent
 * hardware (and in the cache model's report mode) every case is intact; on a non-coherent SoC
 * (the model's emulate mode) each buggy case corrupts it.
 */

#include <linux/cache.h>
#include <linux/completion.h>
#include <linux/debugfs.h>
#include <linux/dma-mapping.h>
#include <linux/dmaengine.h>
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "cosim_control.h"

#define RESULT_LEN 256
#define LEN 256

static struct dentry *debugfs_dir;
static DEFINE_MUTEX(lock);
static char result[RESULT_LEN] = "idle\n";

struct zoo {
	struct dma_chan *chan;
	struct device *dev;
	u8 *coherent; /* the other end of each copy */
	dma_addr_t coherent_dma;
};

static void copy_done(void *param)
{
	complete(param);
}

/* One memcpy by the DMA controller, waited for. */
static int dma_copy(struct zoo *z, dma_addr_t dst, dma_addr_t src, size_t len)
{
	DECLARE_COMPLETION_ONSTACK(done);
	struct dma_async_tx_descriptor *tx;

	tx = dmaengine_prep_dma_memcpy(z->chan, dst, src, len, DMA_PREP_INTERRUPT);
	if (!tx)
		return -EIO;
	tx->callback = copy_done;
	tx->callback_param = &done;
	dmaengine_submit(tx);
	dma_async_issue_pending(z->chan);
	if (!wait_for_completion_timeout(&done, msecs_to_jiffies(3000))) {
		dmaengine_terminate_sync(z->chan);
		return -ETIMEDOUT;
	}
	return 0;
}

static void fill(u8 *buf, size_t len, u8 seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = seed + i * 7;
}

static bool holds(const u8 *buf, size_t len, u8 seed)
{
	for (size_t i = 0; i < len; i++)
		if (buf[i] != (u8)(seed + i * 7))
			return false;
	return true;
}

/* The CPU fills a buffer for the device: all writes must precede the map or a sync. */
static int to_device_no_sync(struct zoo *z, bool fixed, bool *intact)
{
	u8 *buf = kmalloc(LEN, GFP_KERNEL);
	dma_addr_t dma;
	int ret;

	if (!buf)
		return -ENOMEM;
	fill(buf, LEN, 1);
	dma = dma_map_single(z->dev, buf, LEN, DMA_TO_DEVICE);
	if (dma_mapping_error(z->dev, dma)) {
		kfree(buf);
		return -ENOMEM;
	}
	fill(buf, LEN, 2); /* the buffer's real content, written after the map */
	if (fixed)
		dma_sync_single_for_device(z->dev, dma, LEN, DMA_TO_DEVICE);
	ret = dma_copy(z, z->coherent_dma, dma, LEN);
	dma_unmap_single(z->dev, dma, LEN, DMA_TO_DEVICE);
	*intact = holds(z->coherent, LEN, 2);
	kfree(buf);
	return ret;
}

/* The CPU reads what the device wrote: only after dma_sync_single_for_cpu or the unmap. */
static int from_device_no_sync(struct zoo *z, bool fixed, bool *intact)
{
	u8 *buf = kzalloc(LEN, GFP_KERNEL); /* zeroed by the CPU: its lines are in the cache */
	dma_addr_t dma;
	int ret;

	if (!buf)
		return -ENOMEM;
	fill(z->coherent, LEN, 3);
	dma = dma_map_single(z->dev, buf, LEN, DMA_FROM_DEVICE);
	if (dma_mapping_error(z->dev, dma)) {
		kfree(buf);
		return -ENOMEM;
	}
	ret = dma_copy(z, dma, z->coherent_dma, LEN);
	if (fixed)
		dma_sync_single_for_cpu(z->dev, dma, LEN, DMA_FROM_DEVICE);
	*intact = holds(buf, LEN, 3);
	dma_unmap_single(z->dev, dma, LEN, DMA_FROM_DEVICE);
	kfree(buf);
	return ret;
}

/*
 * A receive buffer inside a struct, next to a field the CPU updates while the device writes.  Its
 * size is a multiple of ARCH_DMA_MINALIGN, so the DMA API does not bounce it through swiotlb (as
 * it does small kmalloc buffers for non-coherent devices): the struct's layout is all there is.
 */
#define RX_LEN 128

struct rx_shared {
	u32 packets; /* the CPU's counter */
	u8 data[RX_LEN]; /* the device's: shares the counter's cache line */
};

struct rx_aligned {
	u32 packets;
	u8 data[RX_LEN] ____cacheline_aligned; /* lines of its own */
};

static int shared_line(struct zoo *z, bool fixed, bool *intact)
{
	struct rx_aligned *aligned = NULL;
	struct rx_shared *shared = NULL;
	u32 *packets;
	dma_addr_t dma;
	u8 *data;
	int ret;

	if (fixed) {
		aligned = kzalloc(sizeof(*aligned), GFP_KERNEL);
		packets = aligned ? &aligned->packets : NULL;
		data = aligned ? aligned->data : NULL;
	} else {
		shared = kzalloc(sizeof(*shared), GFP_KERNEL);
		packets = shared ? &shared->packets : NULL;
		data = shared ? shared->data : NULL;
	}
	if (!data)
		return -ENOMEM;
	fill(z->coherent, RX_LEN, 4);
	dma = dma_map_single(z->dev, data, RX_LEN, DMA_FROM_DEVICE);
	if (dma_mapping_error(z->dev, dma)) {
		ret = -ENOMEM;
		goto out;
	}
	ret = dma_copy(z, dma, z->coherent_dma, RX_LEN);
	WRITE_ONCE(*packets, READ_ONCE(*packets) + 1); /* while the buffer is the device's */
	dma_unmap_single(z->dev, dma, RX_LEN, DMA_FROM_DEVICE);
	*intact = holds(data, RX_LEN, 4);
out:
	kfree(shared);
	kfree(aligned);
	return ret;
}

/* The CPU writes into a buffer while the device owns it: the invalidate at the unmap throws the
 * write away (or a write-back puts it over the device's data). */
static int cpu_writes_owned(struct zoo *z, bool fixed, bool *intact)
{
	u8 *buf = kzalloc(LEN, GFP_KERNEL);
	dma_addr_t dma;
	int ret;

	if (!buf)
		return -ENOMEM;
	fill(z->coherent, LEN, 5);
	dma = dma_map_single(z->dev, buf, LEN, DMA_FROM_DEVICE);
	if (dma_mapping_error(z->dev, dma)) {
		kfree(buf);
		return -ENOMEM;
	}
	if (!fixed)
		memset(buf + LEN - 64, 0xee, 64); /* a "trailer" written while the device owns it */
	ret = dma_copy(z, dma, z->coherent_dma, LEN - 64);
	dma_unmap_single(z->dev, dma, LEN, DMA_FROM_DEVICE);
	if (fixed)
		memset(buf + LEN - 64, 0xee, 64); /* after the unmap: the CPU's again */
	*intact = holds(buf, LEN - 64, 5) && memchr_inv(buf + LEN - 64, 0xee, 64) == NULL;
	kfree(buf);
	return ret;
}

/* The device writes a buffer the driver mapped for the other direction: DMA_TO_DEVICE makes
 * no invalidate at the unmap, so the CPU keeps reading its old copy. */
static int wrong_direction(struct zoo *z, bool fixed, bool *intact)
{
	enum dma_data_direction dir = fixed ? DMA_FROM_DEVICE : DMA_TO_DEVICE;
	u8 *buf = kmalloc(LEN, GFP_KERNEL);
	dma_addr_t dma;
	int ret;

	if (!buf)
		return -ENOMEM;
	memset(buf, 0, LEN);
	fill(z->coherent, LEN, 6);
	dma = dma_map_single(z->dev, buf, LEN, dir);
	if (dma_mapping_error(z->dev, dma)) {
		kfree(buf);
		return -ENOMEM;
	}
	ret = dma_copy(z, dma, z->coherent_dma, LEN);
	dma_unmap_single(z->dev, dma, LEN, dir);
	*intact = holds(buf, LEN, 6);
	kfree(buf);
	return ret;
}

/* The zero-copy page user space fills (one at a time). */
static struct {
	struct zoo z;
	bool fixed;
	struct page *page; /* buggy: a streaming page */
	u8 *cpu;	   /* fixed: a coherent buffer */
	dma_addr_t dma;
} shared;

static void mmap_release(void)
{
	struct zoo *z = &shared.z;

	if (!z->chan)
		return;
	if (shared.page) {
		dma_unmap_page(z->dev, shared.dma, PAGE_SIZE, DMA_TO_DEVICE);
		__free_page(shared.page);
	}
	if (shared.cpu)
		dma_free_coherent(z->dev, PAGE_SIZE, shared.cpu, shared.dma);
	if (z->coherent)
		dma_free_coherent(z->dev, PAGE_SIZE, z->coherent, z->coherent_dma);
	dma_release_channel(z->chan);
	memset(&shared, 0, sizeof(shared));
}

static int mmap_prepare(bool fixed)
{
	struct zoo *z = &shared.z;
	dma_cap_mask_t mask;

	mmap_release();
	dma_cap_zero(mask);
	dma_cap_set(DMA_MEMCPY, mask);
	z->chan = dma_request_channel(mask, NULL, NULL);
	if (!z->chan)
		return -ENODEV;
	z->dev = z->chan->device->dev;
	shared.fixed = fixed;
	z->coherent = dma_alloc_coherent(z->dev, PAGE_SIZE, &z->coherent_dma, GFP_KERNEL);
	if (fixed) {
		shared.cpu = dma_alloc_coherent(z->dev, PAGE_SIZE, &shared.dma, GFP_KERNEL);
	} else {
		shared.page = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (shared.page) {
			/* mapped once, "zero-copy": the driver never syncs it again */
			shared.dma = dma_map_page(z->dev, shared.page, 0, PAGE_SIZE, DMA_TO_DEVICE);
			if (dma_mapping_error(z->dev, shared.dma)) {
				__free_page(shared.page);
				shared.page = NULL;
			}
		}
	}
	if (!z->coherent || (!shared.cpu && !shared.page)) {
		mmap_release();
		return -ENOMEM;
	}
	return 0;
}

static int mmap_send(void)
{
	struct zoo *z = &shared.z;
	bool intact;
	int ret;

	if (!z->chan)
		return -ENODEV;
	ret = dma_copy(z, z->coherent_dma, shared.dma, PAGE_SIZE);
	intact = holds(z->coherent, PAGE_SIZE, 9); /* cosim-zoo-mmap's pattern */
	snprintf(result, RESULT_LEN, "mmap %s data=%s channel=%s ret=%d\n",
		 shared.fixed ? "fixed" : "buggy", intact ? "intact" : "corrupt",
		 dma_chan_name(z->chan), ret);
	return ret;
}

static int buffer_mmap(struct file *file, struct vm_area_struct *vma)
{
	int ret = -ENODEV;

	if (vma->vm_end - vma->vm_start != PAGE_SIZE || vma->vm_pgoff)
		return -EINVAL;
	mutex_lock(&lock);
	if (shared.cpu) /* right: the coherent buffer's own (non-cacheable) attributes */
		ret = dma_mmap_coherent(shared.z.dev, vma, shared.cpu, shared.dma, PAGE_SIZE);
	else if (shared.page) /* wrong: a streaming page, cacheable in user space */
		ret = remap_pfn_range(vma, vma->vm_start, page_to_pfn(shared.page), PAGE_SIZE,
				      vma->vm_page_prot);
	mutex_unlock(&lock);
	return ret;
}

static const struct file_operations buffer_fops = {
	.owner = THIS_MODULE,
	.mmap = buffer_mmap,
};

static const struct {
	const char *name;
	int (*run)(struct zoo *z, bool fixed, bool *intact);
} cases[] = {
	{ "to-device-no-sync", to_device_no_sync },
	{ "from-device-no-sync", from_device_no_sync },
	{ "shared-line", shared_line },
	{ "cpu-writes-owned", cpu_writes_owned },
	{ "wrong-direction", wrong_direction },
};

static int run_case(const char *name, bool fixed)
{
	struct zoo z = { 0 };
	dma_cap_mask_t mask;
	bool intact = false;
	int ret = -EINVAL;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++)
		if (!strcmp(cases[i].name, name))
			break;
	if (i == ARRAY_SIZE(cases))
		return -EINVAL;
	dma_cap_zero(mask);
	dma_cap_set(DMA_MEMCPY, mask);
	z.chan = dma_request_channel(mask, NULL, NULL);
	if (!z.chan)
		return -ENODEV;
	z.dev = z.chan->device->dev;
	z.coherent = dma_alloc_coherent(z.dev, LEN, &z.coherent_dma, GFP_KERNEL);
	if (z.coherent) {
		ret = cases[i].run(&z, fixed, &intact);
		dma_free_coherent(z.dev, LEN, z.coherent, z.coherent_dma);
	} else {
		ret = -ENOMEM;
	}
	snprintf(result, RESULT_LEN, "%s %s data=%s channel=%s ret=%d\n", name,
		 fixed ? "fixed" : "buggy", intact ? "intact" : "corrupt", dma_chan_name(z.chan), ret);
	dma_release_channel(z.chan);
	return ret;
}

static ssize_t control_write(struct file *file, const char __user *ubuf, size_t count,
			     loff_t *ppos)
{
	char buf[64], name[32], variant[8];
	int ret;

	ret = cosim_copy_command(buf, sizeof(buf), ubuf, count);
	if (ret)
		return ret;
	if (sysfs_streq(buf, "mmap-send")) {
		mutex_lock(&lock);
		ret = mmap_send();
		mutex_unlock(&lock);
		return ret ? ret : count;
	}
	if (sscanf(buf, "%31s %7s", name, variant) != 2 ||
	    (strcmp(variant, "buggy") && strcmp(variant, "fixed")))
		return -EINVAL;
	mutex_lock(&lock);
	if (!strcmp(name, "mmap-prepare"))
		ret = mmap_prepare(!strcmp(variant, "fixed"));
	else
		ret = run_case(name, !strcmp(variant, "fixed"));
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

static int __init zoo_init(void)
{
	debugfs_dir = debugfs_create_dir("cosim-cache-zoo", NULL);
	debugfs_create_file("control", 0600, debugfs_dir, NULL, &control_fops);
	/* debugfs's full proxy forwards no mmap: this file's own operations serve it */
	debugfs_create_file_unsafe("buffer", 0600, debugfs_dir, NULL, &buffer_fops);
	return 0;
}

static void __exit zoo_exit(void)
{
	debugfs_remove_recursive(debugfs_dir);
	mmap_release();
}

module_init(zoo_init);
module_exit(zoo_exit);
MODULE_DESCRIPTION("cosim: non-coherent DMA mistakes and their fixes, for the cache model");
MODULE_LICENSE("GPL");
