// SPDX-License-Identifier: GPL-2.0
/*
 * Driver for cosim's "cosim,dma-copy" memory-to-memory copy engine, written to exercise the DMA
 * API the way real drivers use it: coherent buffers, streaming mappings with dma_sync_*,
 * scatter-gather lists and a dma_pool of hardware descriptors.
 *
 * Driven through debugfs, /sys/kernel/debug/cosim-dma-copy/<device>/control:
 *   echo "test MODE ITERATIONS SEED MAX_SIZE" > control   MODE: coherent, single, sg or all
 *   echo "bench SIZE COUNT" > control                      copies without verifying, timed
 *   echo "fault ADDRESS" > control                         copies to ADDRESS, expects a fault
 *   echo "misuse" > control                                unmaps with the wrong size: a
 *                                                          deliberate bug for DMA-API debug
 *   echo "ring buggy|fixed" > control                      a ring entry's status polled, then
 *                                                          its fields read (without / with
 *                                                          dma_rmb()): the cache model's case
 *   echo "after-unmap buggy|fixed" > control               a receive buffer unmapped before
 *                                                          (buggy) or after (fixed) the copy
 *                                                          into it: behind an IOMMU, a fault
 *   echo "overrun buggy|fixed" > control                   a copy one page longer than the
 *                                                          receive buffer's mapping (buggy), or
 *                                                          as long (fixed): behind an IOMMU, a
 *                                                          fault at the end of the mapping
 *   echo "remap" > control                                 two receive buffers mapped in turn
 *                                                          (a correct driver): under an IOMMU
 *                                                          driver that forgets its IOTLB zaps,
 *                                                          the second copy lands in the first
 *   echo "mask BITS" > control                             dma_set_mask_and_coherent(BITS):
 *                                                          "mask 64" on a 32-bit engine is the
 *                                                          bug of a driver that ignores ADDR_BITS
 *   echo "high" > control                                  a copy between pages above 4 GiB
 *   cat control                                            the last result, one line
 * A write returns an error when the operation failed; the result line says why.
 */

#include <linux/completion.h>
#include <linux/debugfs.h>
#include <linux/dma-mapping.h>
#include <linux/dmapool.h>
#include <linux/gfp.h>
#include <linux/interrupt.h>
#include <linux/io.h>
#include <linux/io-64-nonatomic-lo-hi.h>
#include <linux/iommu.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mod_devicetable.h>
#include <linux/mutex.h>
#include <linux/platform_device.h>
#include <linux/pm_runtime.h>
#include <linux/prandom.h>
#include <linux/scatterlist.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/string.h>

#include "cosim_control.h"

#define REG_ID		0x00
#define REG_CTRL	0x08
#define REG_STATUS	0x0c
#define REG_SRC		0x10
#define REG_DST		0x18
#define REG_LEN		0x20
#define REG_DESC	0x24
#define REG_FAULT	0x2c
#define REG_COPIED	0x34
#define REG_ADDR_BITS	0x3c

#define CTRL_START	BIT(0)
#define CTRL_DESC	BIT(1)
#define CTRL_IRQ_EN	BIT(2)
#define STATUS_DONE	BIT(1)
#define STATUS_ERROR	BIT(2)

#define ENGINE_ID	0x434f5059
#define GUARD_BYTE	0xa5
#define MAX_SG_ENTS	16
#define RESULT_LEN	256
#define AUTOSUSPEND_MS	100	/* stays active between the commands of one test run */

struct copy_desc {
	__le64 src;
	__le64 dst;
	__le32 len;
	__le32 flags;
	__le64 next;
} __packed;

struct copy_engine {
	struct device *dev;
	void __iomem *regs;
	struct dma_pool *desc_pool;
	struct completion done;
	u32 status;
	struct mutex lock;	/* one operation at a time */
	struct dentry *debugfs;
	char result[RESULT_LEN];
};

static struct dentry *debugfs_root;

static irqreturn_t copy_irq(int irq, void *data)
{
	struct copy_engine *ce = data;
	u32 status = readl(ce->regs + REG_STATUS);

	if (!(status & (STATUS_DONE | STATUS_ERROR)))
		return IRQ_NONE;
	writel(status & (STATUS_DONE | STATUS_ERROR), ce->regs + REG_STATUS);
	ce->status = status;
	complete(&ce->done);
	return IRQ_HANDLED;
}

/* Starts the engine and waits for its interrupt; -EIO on a DMA fault. */
static int copy_run(struct copy_engine *ce, u32 mode)
{
	reinit_completion(&ce->done);
	writel(mode | CTRL_START | CTRL_IRQ_EN, ce->regs + REG_CTRL);
	if (!wait_for_completion_timeout(&ce->done, msecs_to_jiffies(2000))) {
		dev_err(ce->dev, "no completion interrupt\n");
		return -ETIMEDOUT;
	}
	if (ce->status & STATUS_ERROR) {
		dev_err(ce->dev, "DMA fault at %#llx\n", lo_hi_readq(ce->regs + REG_FAULT));
		return -EIO;
	}
	return 0;
}

static int copy_single(struct copy_engine *ce, dma_addr_t src, dma_addr_t dst, u32 len)
{
	lo_hi_writeq(src, ce->regs + REG_SRC);
	lo_hi_writeq(dst, ce->regs + REG_DST);
	writel(len, ce->regs + REG_LEN);
	return copy_run(ce, 0);
}

static void fill_random(struct rnd_state *rnd, u8 *buf, size_t len)
{
	prandom_bytes_state(rnd, buf, len);
}

static u32 random_below(struct rnd_state *rnd, u32 bound)
{
	return bound ? prandom_u32_state(rnd) % bound : 0;
}

/* The copied span must match the source and the bytes around it must be untouched. */
static int check_copy(struct copy_engine *ce, const u8 *src, const u8 *dst, size_t off, size_t len,
		      size_t total, const char *what)
{
	size_t i;

	if (memcmp(src, dst + off, len)) {
		for (i = 0; i < len && src[i] == dst[off + i]; i++)
			;
		dev_err(ce->dev, "%s: %zu-byte copy differs at byte %zu\n", what, len, i);
		return -EILSEQ;
	}
	for (i = 0; i < total; i++) {
		if ((i < off || i >= off + len) && dst[i] != GUARD_BYTE) {
			dev_err(ce->dev, "%s: byte %zu outside the %zu-byte copy at %zu was written\n",
				what, i, len, off);
			return -EILSEQ;
		}
	}
	return 0;
}

/* Coherent buffers: the CPU and the device share them with no syncs. */
static int test_coherent(struct copy_engine *ce, struct rnd_state *rnd, u32 max, u64 *bytes)
{
	size_t total = max + 64;
	dma_addr_t src_dma, dst_dma;
	u32 len, soff, doff;
	u8 *src, *dst;
	int ret;

	src = dma_alloc_coherent(ce->dev, total, &src_dma, GFP_KERNEL);
	dst = dma_alloc_coherent(ce->dev, total, &dst_dma, GFP_KERNEL);
	if (!src || !dst) {
		ret = -ENOMEM;
		goto out;
	}
	len = 1 + random_below(rnd, max);
	soff = random_below(rnd, 64);
	doff = random_below(rnd, 64);
	fill_random(rnd, src, total);
	memset(dst, GUARD_BYTE, total);
	ret = copy_single(ce, src_dma + soff, dst_dma + doff, len);
	if (!ret)
		ret = check_copy(ce, src + soff, dst, doff, len, total, "coherent");
	*bytes += len;
out:
	if (src)
		dma_free_coherent(ce->dev, total, src, src_dma);
	if (dst)
		dma_free_coherent(ce->dev, total, dst, dst_dma);
	return ret;
}

/* Streaming mappings: ownership passes with dma_sync_* around each transfer. */
static int test_single(struct copy_engine *ce, struct rnd_state *rnd, u32 max, u64 *bytes)
{
	size_t total = max + 64;
	dma_addr_t src_dma, dst_dma;
	u32 len, soff, doff;
	u8 *src, *dst;
	int ret = -ENOMEM;

	src = kmalloc(total, GFP_KERNEL);
	dst = kmalloc(total, GFP_KERNEL);
	if (!src || !dst)
		goto out_free;
	memset(dst, GUARD_BYTE, total);
	src_dma = dma_map_single(ce->dev, src, total, DMA_TO_DEVICE);
	if (dma_mapping_error(ce->dev, src_dma))
		goto out_free;
	dst_dma = dma_map_single(ce->dev, dst, total, DMA_FROM_DEVICE);
	if (dma_mapping_error(ce->dev, dst_dma))
		goto out_unmap_src;

	len = 1 + random_below(rnd, max);
	soff = random_below(rnd, 64);
	doff = random_below(rnd, 64);
	/* The CPU writes new data: hand the buffer back to the device before the copy. */
	dma_sync_single_for_cpu(ce->dev, src_dma, total, DMA_TO_DEVICE);
	fill_random(rnd, src, total);
	dma_sync_single_for_device(ce->dev, src_dma, total, DMA_TO_DEVICE);

	ret = copy_single(ce, src_dma + soff, dst_dma + doff, len);
	dma_sync_single_for_cpu(ce->dev, dst_dma, total, DMA_FROM_DEVICE);
	if (!ret)
		ret = check_copy(ce, src + soff, dst, doff, len, total, "single");
	dma_sync_single_for_device(ce->dev, dst_dma, total, DMA_FROM_DEVICE);
	*bytes += len;

	dma_unmap_single(ce->dev, dst_dma, total, DMA_FROM_DEVICE);
out_unmap_src:
	dma_unmap_single(ce->dev, src_dma, total, DMA_TO_DEVICE);
out_free:
	kfree(src);
	kfree(dst);
	return ret;
}

/* Splits len bytes into 1..MAX_SG_ENTS kmalloc'd pieces of random sizes. */
static int build_sg(struct sg_table *sgt, struct rnd_state *rnd, u32 len)
{
	u32 nents = 1 + random_below(rnd, min_t(u32, len, MAX_SG_ENTS));
	u32 left = len, i, piece;
	struct scatterlist *sg;
	void *buf;

	if (sg_alloc_table(sgt, nents, GFP_KERNEL))
		return -ENOMEM;
	for_each_sg(sgt->sgl, sg, nents, i) {
		piece = i == nents - 1 ? left : 1 + random_below(rnd, left - (nents - 1 - i));
		buf = kmalloc(piece, GFP_KERNEL);
		if (!buf)
			return -ENOMEM;
		sg_set_buf(sg, buf, piece);
		left -= piece;
	}
	return 0;
}

static void free_sg(struct sg_table *sgt)
{
	struct scatterlist *sg;
	int i;

	if (!sgt->sgl)
		return;
	for_each_sg(sgt->sgl, sg, sgt->orig_nents, i)
		kfree(sg_virt(sg));
	sg_free_table(sgt);
}

/*
 * Scatter-gather: both lists mapped with dma_map_sg, one descriptor (from the dma_pool) per
 * overlapping run of source and destination segments, the chain run by the engine at once.
 */
static int test_sg(struct copy_engine *ce, struct rnd_state *rnd, u32 max, u64 *bytes)
{
	struct sg_table src_sgt = {}, dst_sgt = {};
	struct copy_desc *descs[2 * MAX_SG_ENTS];
	dma_addr_t desc_dma[2 * MAX_SG_ENTS];
	struct scatterlist *s, *d;
	u32 len = 1 + random_below(rnd, max);
	u32 s_used = 0, d_used = 0, chunk, off;
	int ndesc = 0, src_n = 0, dst_n = 0, s_left, d_left, i, ret;
	u8 *expect = NULL;

	ret = build_sg(&src_sgt, rnd, len);
	if (!ret)
		ret = build_sg(&dst_sgt, rnd, len);
	expect = kmalloc(len, GFP_KERNEL);
	if (ret || !expect) {
		ret = -ENOMEM;
		goto out;
	}
	off = 0;
	for_each_sg(src_sgt.sgl, s, src_sgt.orig_nents, i) {
		fill_random(rnd, sg_virt(s), s->length);
		memcpy(expect + off, sg_virt(s), s->length);
		off += s->length;
	}
	for_each_sg(dst_sgt.sgl, d, dst_sgt.orig_nents, i)
		memset(sg_virt(d), GUARD_BYTE, d->length);

	src_n = dma_map_sg(ce->dev, src_sgt.sgl, src_sgt.orig_nents, DMA_TO_DEVICE);
	dst_n = dma_map_sg(ce->dev, dst_sgt.sgl, dst_sgt.orig_nents, DMA_FROM_DEVICE);
	if (!src_n || !dst_n) {
		ret = -ENOMEM;
		goto out_unmap;
	}

	s = src_sgt.sgl;
	d = dst_sgt.sgl;
	s_left = src_n;
	d_left = dst_n;
	while (s && d) {
		chunk = min(sg_dma_len(s) - s_used, sg_dma_len(d) - d_used);
		descs[ndesc] = dma_pool_zalloc(ce->desc_pool, GFP_KERNEL, &desc_dma[ndesc]);
		if (!descs[ndesc]) {
			ret = -ENOMEM;
			goto out_free_descs;
		}
		descs[ndesc]->src = cpu_to_le64(sg_dma_address(s) + s_used);
		descs[ndesc]->dst = cpu_to_le64(sg_dma_address(d) + d_used);
		descs[ndesc]->len = cpu_to_le32(chunk);
		if (ndesc)
			descs[ndesc - 1]->next = cpu_to_le64(desc_dma[ndesc]);
		ndesc++;
		s_used += chunk;
		d_used += chunk;
		if (s_used == sg_dma_len(s)) {
			s = --s_left ? sg_next(s) : NULL;
			s_used = 0;
		}
		if (d_used == sg_dma_len(d)) {
			d = --d_left ? sg_next(d) : NULL;
			d_used = 0;
		}
	}
	lo_hi_writeq(desc_dma[0], ce->regs + REG_DESC);
	ret = copy_run(ce, CTRL_DESC);
	if (!ret && readl(ce->regs + REG_COPIED) != len) {
		dev_err(ce->dev, "sg: engine copied %u of %u bytes\n", readl(ce->regs + REG_COPIED), len);
		ret = -EILSEQ;
	}
	*bytes += len;

out_free_descs:
	for (i = 0; i < ndesc; i++)
		dma_pool_free(ce->desc_pool, descs[i], desc_dma[i]);
out_unmap:
	if (src_n)
		dma_unmap_sg(ce->dev, src_sgt.sgl, src_sgt.orig_nents, DMA_TO_DEVICE);
	if (dst_n)
		dma_unmap_sg(ce->dev, dst_sgt.sgl, dst_sgt.orig_nents, DMA_FROM_DEVICE);
	if (!ret) {
		off = 0;
		for_each_sg(dst_sgt.sgl, d, dst_sgt.orig_nents, i) {
			if (memcmp(sg_virt(d), expect + off, d->length)) {
				dev_err(ce->dev, "sg: segment %d (%u bytes at %u) differs\n", i, d->length,
					off);
				ret = -EILSEQ;
				break;
			}
			off += d->length;
		}
	}
out:
	kfree(expect);
	free_sg(&src_sgt);
	free_sg(&dst_sgt);
	return ret;
}

typedef int (*test_fn)(struct copy_engine *, struct rnd_state *, u32, u64 *);

static const struct {
	const char *name;
	test_fn fn;
} tests[] = {
	{ "coherent", test_coherent },
	{ "single", test_single },
	{ "sg", test_sg },
};

static int run_tests(struct copy_engine *ce, const char *mode, u32 iterations, u32 seed, u32 max)
{
	u32 failures = 0, done = 0, i, ntests = 0;
	test_fn selected[ARRAY_SIZE(tests)];
	struct rnd_state rnd;
	u64 bytes = 0;
	ktime_t start;
	size_t t;

	for (t = 0; t < ARRAY_SIZE(tests); t++)
		if (!strcmp(mode, "all") || !strcmp(mode, tests[t].name))
			selected[ntests++] = tests[t].fn;
	if (!ntests || !iterations || !max || max > SZ_1M)
		return -EINVAL;
	prandom_seed_state(&rnd, seed);
	start = ktime_get();
	for (i = 0; i < iterations; i++, done++) {
		if (selected[i % ntests](ce, &rnd, max, &bytes))
			failures++;
		if (fatal_signal_pending(current))
			break;
	}
	snprintf(ce->result, RESULT_LEN,
		 "test mode=%s iterations=%u seed=%u max=%u failures=%u bytes=%llu usecs=%lld\n",
		 mode, done, seed, max, failures, bytes, ktime_us_delta(ktime_get(), start));
	return failures ? -EIO : 0;
}

static int run_bench(struct copy_engine *ce, u32 size, u32 count)
{
	dma_addr_t src_dma, dst_dma;
	void *src, *dst;
	ktime_t start;
	s64 ns;
	u32 i;
	int ret = 0;

	if (!size || !count || size > SZ_16M)
		return -EINVAL;
	src = dma_alloc_coherent(ce->dev, size, &src_dma, GFP_KERNEL);
	dst = dma_alloc_coherent(ce->dev, size, &dst_dma, GFP_KERNEL);
	if (!src || !dst) {
		ret = -ENOMEM;
		goto out;
	}
	start = ktime_get();
	for (i = 0; i < count && !ret; i++)
		ret = copy_single(ce, src_dma, dst_dma, size);
	ns = ktime_to_ns(ktime_sub(ktime_get(), start));
	snprintf(ce->result, RESULT_LEN, "bench size=%u count=%u nsecs=%lld mbytes_per_s=%lld\n",
		 size, count, ns, ns ? div64_s64((s64)size * count * 1000, ns) : 0);
out:
	if (src)
		dma_free_coherent(ce->dev, size, src, src_dma);
	if (dst)
		dma_free_coherent(ce->dev, size, dst, dst_dma);
	return ret;
}

/* Copies a page to a bus address the caller chose (usually one no memory answers). */
static int run_fault(struct copy_engine *ce, u64 address)
{
	dma_addr_t src_dma;
	void *src;
	int ret;

	src = dma_alloc_coherent(ce->dev, PAGE_SIZE, &src_dma, GFP_KERNEL);
	if (!src)
		return -ENOMEM;
	ret = copy_single(ce, src_dma, address, PAGE_SIZE);
	snprintf(ce->result, RESULT_LEN, "fault address=%#llx status=%#x fault_address=%#llx\n",
		 address, ce->status, lo_hi_readq(ce->regs + REG_FAULT));
	dma_free_coherent(ce->dev, PAGE_SIZE, src, src_dma);
	return ret;
}

/* A deliberate driver bug: the unmap names half the mapped size. */
static int run_misuse(struct copy_engine *ce)
{
	dma_addr_t dma;
	void *buf;

	buf = kmalloc(256, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	dma = dma_map_single(ce->dev, buf, 256, DMA_TO_DEVICE);
	if (!dma_mapping_error(ce->dev, dma))
		dma_unmap_single(ce->dev, dma, 128, DMA_TO_DEVICE);
	kfree(buf);
	snprintf(ce->result, RESULT_LEN, "misuse unmapped 128 of 256 bytes\n");
	return 0;
}

/*
 * The cache model's descriptor-ring case (the bug zoo's "ring-no-rmb"): the engine completes an
 * entry as ring hardware does, its fields first, then (the chain's second descriptor) its status.
 * The CPU polls the status in coherent memory and reads a field after it; "fixed" puts dma_rmb()
 * between the two reads, without which the CPU may perform the field's read first.
 */
struct completion_record {
	__le64 cookie;
	__le32 length;
	__le32 flags;
	__le32 status; /* a word of its own, written last */
	__le32 pad;
};

#define RECORD_DONE 1
#define RECORD_LENGTH 4096

static noinline int run_ring(struct copy_engine *ce, bool fixed) /* named in the report */
{
	struct completion_record *rec, *src;
	struct copy_desc *descs[2] = { NULL, NULL };
	dma_addr_t rec_dma, desc_dma[2];
	unsigned long flags, polls = 10000000;
	u32 length, status;
	int i, ret = -ENOMEM;

	rec = dma_alloc_coherent(ce->dev, 2 * sizeof(*rec), &rec_dma, GFP_KERNEL);
	if (!rec)
		return -ENOMEM;
	src = rec + 1; /* what the engine copies in */
	memset(rec, 0, sizeof(*rec));
	src->cookie = cpu_to_le64(0x1234);
	src->length = cpu_to_le32(RECORD_LENGTH);
	src->flags = cpu_to_le32(3);
	src->status = cpu_to_le32(RECORD_DONE);
	for (i = 0; i < 2; i++) {
		descs[i] = dma_pool_zalloc(ce->desc_pool, GFP_KERNEL, &desc_dma[i]);
		if (!descs[i])
			goto out;
	}
	descs[0]->src = cpu_to_le64(rec_dma + sizeof(*rec));
	descs[0]->dst = cpu_to_le64(rec_dma);
	descs[0]->len = cpu_to_le32(offsetof(struct completion_record, status));
	descs[0]->next = cpu_to_le64(desc_dma[1]);
	descs[1]->src = cpu_to_le64(rec_dma + sizeof(*rec) + offsetof(struct completion_record, status));
	descs[1]->dst = cpu_to_le64(rec_dma + offsetof(struct completion_record, status));
	descs[1]->len = cpu_to_le32(8);
	lo_hi_writeq(desc_dma[0], ce->regs + REG_DESC);
	local_irq_save(flags); /* no interrupt, and none of its barriers, between the two reads */
	writel(CTRL_DESC | CTRL_START, ce->regs + REG_CTRL);
	while (le32_to_cpu(READ_ONCE(rec->status)) != RECORD_DONE && --polls)
		cpu_relax();
	if (fixed)
		dma_rmb();
	length = le32_to_cpu(READ_ONCE(rec->length));
	local_irq_restore(flags);
	status = readl(ce->regs + REG_STATUS);
	writel(status & (STATUS_DONE | STATUS_ERROR), ce->regs + REG_STATUS);
	snprintf(ce->result, RESULT_LEN, "ring %s length=%u status=%#x polled=%s\n",
		 fixed ? "fixed" : "buggy", length, status, polls ? "done" : "timeout");
	ret = polls && length == RECORD_LENGTH && (status & STATUS_DONE) ? 0 : -EIO;
out:
	for (i = 0; i < 2; i++)
		if (descs[i])
			dma_pool_free(ce->desc_pool, descs[i], desc_dma[i]);
	dma_free_coherent(ce->dev, 2 * sizeof(*rec), rec, rec_dma);
	return ret;
}

/*
 * A use-after-unmap: the driver hands the engine a receive buffer's DMA address after
 * dma_unmap_single (buggy) instead of before it (fixed).  Without an IOMMU the engine writes the
 * page the kernel may already have reused; behind one, the IOVA is no longer mapped and the
 * transfer faults.
 */
static int run_after_unmap(struct copy_engine *ce, bool fixed)
{
	dma_addr_t src_dma, dst_dma;
	u8 *src, *dst;
	int ret = -ENOMEM;

	src = dma_alloc_coherent(ce->dev, PAGE_SIZE, &src_dma, GFP_KERNEL);
	dst = kmalloc(PAGE_SIZE, GFP_KERNEL);
	if (!src || !dst)
		goto out;
	memset(src, 0x5a, PAGE_SIZE);
	dst_dma = dma_map_single(ce->dev, dst, PAGE_SIZE, DMA_FROM_DEVICE);
	if (dma_mapping_error(ce->dev, dst_dma))
		goto out;
	if (!fixed)
		dma_unmap_single(ce->dev, dst_dma, PAGE_SIZE, DMA_FROM_DEVICE);
	ret = copy_single(ce, src_dma, dst_dma, PAGE_SIZE);
	if (fixed)
		dma_unmap_single(ce->dev, dst_dma, PAGE_SIZE, DMA_FROM_DEVICE);
	snprintf(ce->result, RESULT_LEN, "after-unmap %s dma=%#llx ret=%d data=%s\n",
		 fixed ? "fixed" : "buggy", (u64)dst_dma, ret,
		 !ret && memchr_inv(dst, 0x5a, PAGE_SIZE) == NULL ? "intact" : "lost");
out:
	kfree(dst);
	if (src)
		dma_free_coherent(ce->dev, PAGE_SIZE, src, src_dma);
	return ret;
}

/*
 * A page copied to the next one, both above 4 GiB, as the page allocator hands out on a board
 * with more RAM than that.  A 32-bit engine reaches them through swiotlb's bounce buffers when
 * the DMA mask (or the bus's dma-ranges) says 32 bits; under a 64-bit mask it drops the upper
 * address bits and copies 4 GiB lower.  So that this corruption cannot hit the kernel, the two
 * pages 4 GiB below (the "victim") are the driver's own: it allocates them first, then takes the
 * pages 4 GiB above them.
 */
#define HIGH_TRIES 64
#define HIGH_PFNS (SZ_4G >> PAGE_SHIFT)

static int run_high(struct copy_engine *ce)
{
	struct page *tries[HIGH_TRIES], *victim_pages = NULL;
	unsigned long high_pfn = 0;
	dma_addr_t src_dma, dst_dma;
	u8 *src, *dst, *victim;
	bool victim_intact;
	int n, i, ret, above = 0, taken = 0;

	for (n = 0; n < HIGH_TRIES && !victim_pages; n++) {
		tries[n] = alloc_pages(GFP_KERNEL | GFP_DMA, 1);
		if (!tries[n])
			break;
		high_pfn = page_to_pfn(tries[n]) + HIGH_PFNS;
		if (!pfn_valid(high_pfn) || !pfn_valid(high_pfn + 1))
			continue;
		above++;
		taken = alloc_contig_range(high_pfn, high_pfn + 2, MIGRATE_MOVABLE, GFP_KERNEL);
		if (!taken)
			victim_pages = tries[n];
	}
	for (i = 0; i < n; i++)
		if (tries[i] && tries[i] != victim_pages)
			__free_pages(tries[i], 1);
	if (!victim_pages) {
		snprintf(ce->result, RESULT_LEN, "high error: of %d pages below 4 GiB, %d had RAM 4 GiB "
			 "above, which could not be taken (last error %d)\n", n, above, taken);
		return -ENOMEM;
	}
	src = page_address(pfn_to_page(high_pfn));
	dst = src + PAGE_SIZE;
	victim = page_address(victim_pages);
	memset(src, 0x5a, PAGE_SIZE);
	memset(dst, 0, PAGE_SIZE);
	memset(victim, GUARD_BYTE, PAGE_SIZE);
	memset(victim + PAGE_SIZE, 0x3c, PAGE_SIZE); /* differs from the page before it */
	ret = -ENOMEM;
	src_dma = dma_map_single(ce->dev, src, PAGE_SIZE, DMA_TO_DEVICE);
	if (dma_mapping_error(ce->dev, src_dma))
		goto out;
	dst_dma = dma_map_single(ce->dev, dst, PAGE_SIZE, DMA_FROM_DEVICE);
	if (dma_mapping_error(ce->dev, dst_dma)) {
		dma_unmap_single(ce->dev, src_dma, PAGE_SIZE, DMA_TO_DEVICE);
		goto out;
	}
	ret = copy_single(ce, src_dma, dst_dma, PAGE_SIZE);
	dma_unmap_single(ce->dev, dst_dma, PAGE_SIZE, DMA_FROM_DEVICE);
	dma_unmap_single(ce->dev, src_dma, PAGE_SIZE, DMA_TO_DEVICE);
	victim_intact = !memchr_inv(victim, GUARD_BYTE, PAGE_SIZE) &&
			!memchr_inv(victim + PAGE_SIZE, 0x3c, PAGE_SIZE);
	snprintf(ce->result, RESULT_LEN,
		 "high mask=%d phys=%#llx src_dma=%#llx dst_dma=%#llx victim=%#llx ret=%d data=%s "
		 "victim_pages=%s\n", fls64(dma_get_mask(ce->dev)), (u64)PFN_PHYS(high_pfn),
		 (u64)src_dma, (u64)dst_dma, (u64)page_to_phys(victim_pages), ret,
		 !ret && !memchr_inv(dst, 0x5a, PAGE_SIZE) ? "intact" : "lost",
		 victim_intact ? "intact" : "overwritten");
out:
	free_contig_range(high_pfn, 2);
	__free_pages(victim_pages, 1);
	return ret;
}

static int set_mask(struct copy_engine *ce, u32 bits)
{
	int ret = bits && bits <= 64 ? dma_set_mask_and_coherent(ce->dev, DMA_BIT_MASK(bits)) : -EINVAL;

	snprintf(ce->result, RESULT_LEN, "mask %u ret=%d\n", bits, ret);
	return ret;
}

/*
 * A correct driver's two receive buffers of four pages, mapped one after the other: iommu-dma
 * gives the second the IOVAs the first had.  An IOMMU driver that does not zap the IOTLB when it
 * unmaps leaves the first buffer's translations there (rockchip-iommu zaps only the first and
 * last page of a new mapping), so the middle of the second copy lands in the first buffer.
 */
#define REMAP_LEN (4 * PAGE_SIZE)

static int run_remap(struct copy_engine *ce)
{
	dma_addr_t src_dma, a_dma, b_dma = 0;
	u8 *src, *a, *b;
	int ret = -ENOMEM;

	src = dma_alloc_coherent(ce->dev, REMAP_LEN, &src_dma, GFP_KERNEL);
	a = kmalloc(REMAP_LEN, GFP_KERNEL);
	b = kmalloc(REMAP_LEN, GFP_KERNEL);
	if (!src || !a || !b)
		goto out;
	memset(src, 0x5a, REMAP_LEN);
	a_dma = dma_map_single(ce->dev, a, REMAP_LEN, DMA_FROM_DEVICE);
	if (dma_mapping_error(ce->dev, a_dma))
		goto out;
	ret = copy_single(ce, src_dma, a_dma, REMAP_LEN);
	dma_unmap_single(ce->dev, a_dma, REMAP_LEN, DMA_FROM_DEVICE);
	memset(a, GUARD_BYTE, REMAP_LEN); /* the CPU's again: no device may write it now */
	memset(src, 0xc3, REMAP_LEN);
	b_dma = dma_map_single(ce->dev, b, REMAP_LEN, DMA_FROM_DEVICE);
	if (dma_mapping_error(ce->dev, b_dma)) {
		ret = -ENOMEM;
		goto out;
	}
	ret = ret ?: copy_single(ce, src_dma, b_dma, REMAP_LEN);
	dma_unmap_single(ce->dev, b_dma, REMAP_LEN, DMA_FROM_DEVICE);
	snprintf(ce->result, RESULT_LEN, "remap a_dma=%#llx b_dma=%#llx ret=%d b=%s a=%s\n",
		 (u64)a_dma, (u64)b_dma, ret, !memchr_inv(b, 0xc3, REMAP_LEN) ? "intact" : "lost",
		 !memchr_inv(a, GUARD_BYTE, REMAP_LEN) ? "intact" : "overwritten");
out:
	kfree(b);
	kfree(a);
	if (src)
		dma_free_coherent(ce->dev, REMAP_LEN, src, src_dma);
	return ret;
}

/*
 * A transfer one page longer than its receive buffer's mapping (buggy) or as long (fixed).  The
 * page after the mapping is left unmapped: a spacer mapped there first is unmapped before the
 * copy (iommu-dma hands out IOVAs top-down), and a buffer whose next page is mapped all the same
 * (an IOVA recycled from an earlier mapping) is held and another one tried.  Behind an IOMMU the
 * extra page then faults; without one it would overwrite whatever memory follows, so the buggy
 * variant runs only behind an IOMMU.
 */
#define OVERRUN_TRIES 8

static int run_overrun(struct copy_engine *ce, bool fixed)
{
	struct iommu_domain *domain = iommu_get_domain_for_dev(ce->dev);
	dma_addr_t src_dma, spacer_dma, dst_dma[OVERRUN_TRIES];
	u8 *src, *spacer = NULL, *dst[OVERRUN_TRIES] = { NULL };
	int n, i, ret = -ENOMEM;

	if (!fixed && (!domain || domain->type == IOMMU_DOMAIN_IDENTITY)) {
		snprintf(ce->result, RESULT_LEN, "overrun error: no IOMMU translates for %s: the extra "
			 "page would overwrite memory\n", dev_name(ce->dev));
		return -EOPNOTSUPP;
	}
	src = dma_alloc_coherent(ce->dev, 2 * PAGE_SIZE, &src_dma, GFP_KERNEL);
	spacer = kmalloc(PAGE_SIZE, GFP_KERNEL);
	if (!src || !spacer)
		goto out;
	memset(src, 0x5a, 2 * PAGE_SIZE);
	for (n = 0; n < OVERRUN_TRIES; n++) {
		dst[n] = kmalloc(PAGE_SIZE, GFP_KERNEL);
		if (!dst[n])
			goto out;
		spacer_dma = dma_map_single(ce->dev, spacer, PAGE_SIZE, DMA_FROM_DEVICE);
		if (dma_mapping_error(ce->dev, spacer_dma))
			goto drop;
		dst_dma[n] = dma_map_single(ce->dev, dst[n], PAGE_SIZE, DMA_FROM_DEVICE);
		dma_unmap_single(ce->dev, spacer_dma, PAGE_SIZE, DMA_FROM_DEVICE);
		if (dma_mapping_error(ce->dev, dst_dma[n]))
			goto drop;
		if (!domain || !iommu_iova_to_phys(domain, dst_dma[n] + PAGE_SIZE))
			break;
	}
	if (n == OVERRUN_TRIES) {
		snprintf(ce->result, RESULT_LEN, "overrun error: %d mappings tried, each followed by a "
			 "mapped page\n", n);
		ret = -EAGAIN;
		goto out;
	}
	ret = copy_single(ce, src_dma, dst_dma[n], fixed ? PAGE_SIZE : 2 * PAGE_SIZE);
	snprintf(ce->result, RESULT_LEN, "overrun %s dma=%#llx mapped=%lu copied=%lu tries=%d ret=%d\n",
		 fixed ? "fixed" : "buggy", (u64)dst_dma[n], PAGE_SIZE,
		 fixed ? PAGE_SIZE : 2 * PAGE_SIZE, n + 1, ret);
	goto out;
drop:
	kfree(dst[n]);
	dst[n] = NULL;
out:
	for (i = 0; i < OVERRUN_TRIES && dst[i]; i++) {
		dma_unmap_single(ce->dev, dst_dma[i], PAGE_SIZE, DMA_FROM_DEVICE);
		kfree(dst[i]);
	}
	kfree(spacer);
	if (src)
		dma_free_coherent(ce->dev, 2 * PAGE_SIZE, src, src_dma);
	return ret;
}

static ssize_t control_write(struct file *file, const char __user *ubuf, size_t count,
			     loff_t *ppos)
{
	struct copy_engine *ce = file->private_data;
	char buf[96], mode[16];
	u32 a, b, c;
	u64 address;
	int ret;

	ret = cosim_copy_command(buf, sizeof(buf), ubuf, count);
	if (ret)
		return ret;

	mutex_lock(&ce->lock);
	/* Runtime-active while it works, as a real driver is: an IOMMU in front of the engine is
	 * programmed only then (its driver resumes with its masters, through a PM device link). */
	ret = pm_runtime_resume_and_get(ce->dev);
	if (ret) {
		mutex_unlock(&ce->lock);
		return ret;
	}
	snprintf(ce->result, RESULT_LEN, "error: bad command\n");
	if (sscanf(buf, "test %15s %u %u %u", mode, &a, &b, &c) == 4)
		ret = run_tests(ce, mode, a, b, c);
	else if (sscanf(buf, "bench %u %u", &a, &b) == 2)
		ret = run_bench(ce, a, b);
	else if (sscanf(buf, "fault %llx", &address) == 1)
		ret = run_fault(ce, address);
	else if (!strncmp(buf, "misuse", 6))
		ret = run_misuse(ce);
	else if (sscanf(buf, "ring %15s", mode) == 1 && (!strcmp(mode, "buggy") || !strcmp(mode, "fixed")))
		ret = run_ring(ce, !strcmp(mode, "fixed"));
	else if (sscanf(buf, "after-unmap %15s", mode) == 1 &&
		 (!strcmp(mode, "buggy") || !strcmp(mode, "fixed")))
		ret = run_after_unmap(ce, !strcmp(mode, "fixed"));
	else if (sscanf(buf, "overrun %15s", mode) == 1 &&
		 (!strcmp(mode, "buggy") || !strcmp(mode, "fixed")))
		ret = run_overrun(ce, !strcmp(mode, "fixed"));
	else if (!strncmp(buf, "remap", 5))
		ret = run_remap(ce);
	else if (sscanf(buf, "mask %u", &a) == 1)
		ret = set_mask(ce, a);
	else if (!strncmp(buf, "high", 4))
		ret = run_high(ce);
	else
		ret = -EINVAL;
	pm_runtime_mark_last_busy(ce->dev);
	pm_runtime_put_autosuspend(ce->dev);
	mutex_unlock(&ce->lock);
	return ret ? ret : count;
}

static ssize_t control_read(struct file *file, char __user *ubuf, size_t count, loff_t *ppos)
{
	struct copy_engine *ce = file->private_data;

	return cosim_read_result(&ce->lock, ce->result, ubuf, count, ppos);
}

static const struct file_operations control_fops = {
	.owner = THIS_MODULE,
	.open = simple_open,
	.read = control_read,
	.write = control_write,
	.llseek = default_llseek,
};

static int copy_probe(struct platform_device *pdev)
{
	struct device *dev = &pdev->dev;
	struct copy_engine *ce;
	u32 id, bits;
	int irq, ret;

	ce = devm_kzalloc(dev, sizeof(*ce), GFP_KERNEL);
	if (!ce)
		return -ENOMEM;
	ce->dev = dev;
	init_completion(&ce->done);
	mutex_init(&ce->lock);
	snprintf(ce->result, RESULT_LEN, "idle\n");

	ce->regs = devm_platform_ioremap_resource(pdev, 0);
	if (IS_ERR(ce->regs))
		return PTR_ERR(ce->regs);
	id = readl(ce->regs + REG_ID);
	if (id != ENGINE_ID)
		return dev_err_probe(dev, -ENODEV, "unexpected ID %#x\n", id);

	/* as wide as the engine's port: a 32-bit engine with RAM above 4 GiB needs bounce buffers */
	bits = readl(ce->regs + REG_ADDR_BITS);
	ret = dma_set_mask_and_coherent(dev, DMA_BIT_MASK(bits));
	if (ret)
		return dev_err_probe(dev, ret, "no %u-bit DMA\n", bits);
	ce->desc_pool = dmam_pool_create("cosim-copy-desc", dev, sizeof(struct copy_desc), 32, 0);
	if (!ce->desc_pool)
		return -ENOMEM;

	irq = platform_get_irq(pdev, 0);
	if (irq < 0)
		return irq;
	ret = devm_request_irq(dev, irq, copy_irq, 0, dev_name(dev), ce);
	if (ret)
		return ret;

	pm_runtime_set_autosuspend_delay(dev, AUTOSUSPEND_MS);
	pm_runtime_use_autosuspend(dev);
	ret = devm_pm_runtime_enable(dev);
	if (ret)
		return ret;

	ce->debugfs = debugfs_create_dir(dev_name(dev), debugfs_root);
	debugfs_create_file("control", 0600, ce->debugfs, ce, &control_fops);
	platform_set_drvdata(pdev, ce);
	dev_info(dev, "cosim dma-copy engine, irq %d, %u address bits\n", irq, bits);
	return 0;
}

static void copy_remove(struct platform_device *pdev)
{
	struct copy_engine *ce = platform_get_drvdata(pdev);

	debugfs_remove_recursive(ce->debugfs);
}

static const struct of_device_id copy_of_match[] = {
	{ .compatible = "cosim,dma-copy" },
	{}
};
MODULE_DEVICE_TABLE(of, copy_of_match);

static struct platform_driver copy_driver = {
	.probe = copy_probe,
	.remove = copy_remove,
	.driver = {
		.name = "cosim-dma-copy",
		.of_match_table = copy_of_match,
	},
};

module_cosim_platform_driver(copy_driver, "cosim-dma-copy", debugfs_root);
MODULE_DESCRIPTION("Driver and DMA-API exerciser for the cosim dma-copy engine");
MODULE_LICENSE("GPL");
