/*
 * cosim-cache: the CPU side of cosim's data-cache model (the state machine is
 * harness/cachemodel/model.c, shared with the harness through a state file).
 *
 * Pages the model tracks get a TLB slow-path flag, and every data access to them reaches the
 * model before it happens, with the guest PC of the instruction and whether the mapping is
 * Normal cacheable memory (a Normal-NC or Device mapping, a coherent buffer's, bypasses the data
 * cache).  Load barriers and load-acquires reach it too, for the order of loads.  DC CVAC/IVAC/CIVAC reach it by physical address, and so do QEMU's own device
 * writes to RAM (virtio: coherent masters).  A page the model starts tracking flushes the TLBs so
 * that every mapping of it, on every CPU, refills with the flag.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/error-report.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "exec/address-spaces.h"
#include "exec/cosim-cache.h"
#include "exec/cputlb.h"
#include "exec/exec-all.h"
#include "exec/memory.h"
#include "exec/translation-block.h"
#include "hw/core/cpu.h"
#include "hw/qdev-core.h"
#include "hw/qdev-properties.h"
#include "qom/object.h"
#include "tcg/insn-start-words.h"
#include "accel/tcg/tb-context.h"
#include "target/arm/cpu.h"

#include <sys/mman.h>

#include "cosim-cachemodel/model.h"

#define TRACK_POLL_MS 5 /* how soon pages a device started tracking get the TLB flag */

#define TYPE_COSIM_CACHE "cosim-cache"
OBJECT_DECLARE_SIMPLE_TYPE(CosimCacheState, COSIM_CACHE)

struct CosimCacheState {
    DeviceState parent_obj;

    char *state_path;
    uint32_t mode;
    uint64_t ram_base;
    uint64_t ram_size;

    cm_state model;
    uint64_t ram_addr; /* QEMU's ram_addr_t of guest RAM's first byte */
    QEMUTimer *poll;
    uint64_t seen_generation;
};

static CosimCacheState *cache; /* one per machine */

static void flush_all_tlbs(void)
{
    CPUState *cpu;

    CPU_FOREACH(cpu) {
        tlb_flush(cpu); /* at once for the calling vCPU, queued for the others */
    }
}

/* Inner write-back or write-through Normal memory: the MAIR attribute's low nibble is neither
 * Device (high nibble 0) nor Non-cacheable (0b0100). */
static bool cacheable(uint8_t attrs)
{
    return (attrs & 0xf0) != 0 && (attrs & 0x0f) != 0x4;
}

/* Uncached accesses too: they see RAM, not the CPU's line (emulate mode), and their loads are
 * ordered no more than cacheable ones (a descriptor ring in a coherent buffer). */
static bool watch_page(CPUState *cpu, const CPUTLBEntryFull *full)
{
    return cm_page_tracked(&cache->model, full->phys_addr);
}

/* The last PC found per vCPU: a loop's accesses come from a few instructions. */
typedef struct {
    uintptr_t ra;
    uint64_t page; /* with CF_PCREL one translation serves every page mapping the code */
    unsigned flushes; /* a flush of the translation buffer reuses host addresses */
    uint64_t pc;
} FoundPc;

static __thread FoundPc found_pc;

typedef struct {
    CPUState *cpu;
    uintptr_t ra;
} PcQuery;

/* The guest PC of the instruction whose memory access returns to host address ra, and X30 (TCG
 * syncs the guest registers to env before a memory access that may fault). */
static uint64_t guest_pc(void *opaque, uint64_t *lr)
{
    PcQuery *q = opaque;
    bool pcrel = q->cpu->tcg_cflags & CF_PCREL;
    uint64_t page = pcrel ? cpu_env(q->cpu)->pc & TARGET_PAGE_MASK : 0;
    unsigned flushes = qatomic_read(&tb_ctx.tb_flush_count);
    uint64_t data[TARGET_INSN_START_WORDS];

    *lr = cpu_env(q->cpu)->xregs[30];
    if (!q->ra) {
        return 0;
    }
    if (found_pc.ra == q->ra && found_pc.page == page && found_pc.flushes == flushes) {
        return found_pc.pc;
    }
    if (!cpu_unwind_state_data(q->cpu, q->ra, data)) {
        return 0;
    }
    found_pc = (FoundPc){ .ra = q->ra, .page = page, .flushes = flushes,
                          .pc = pcrel ? page | data[0] : data[0] };
    return found_pc.pc;
}

static void cpu_access(CPUState *cpu, const CPUTLBEntryFull *full, vaddr addr, int size, bool store,
                       uintptr_t ra)
{
    PcQuery query = { .cpu = cpu, .ra = ra };

    cm_cpu_access_lazy(&cache->model, full->phys_addr | (addr & ~TARGET_PAGE_MASK), size, store,
                       cacheable(full->extra.arm.pte_attrs), cpu->cpu_index, guest_pc, &query);
}

static void maintenance(CPUState *cpu, vaddr addr, int op)
{
    CPUArchState *env = cpu_env(cpu);
    CPUTLBEntryFull *full;
    void *host;
    int flags;

    flags = probe_access_full(env, addr, 0, MMU_DATA_LOAD, cpu_mmu_index(cpu, false), true,
                              &host, &full, 0);
    if (flags & TLB_INVALID_MASK) {
        return; /* no translation: nothing the line could be */
    }
    if (cm_cpu_maintenance(&cache->model, full->phys_addr | (addr & ~TARGET_PAGE_MASK), op,
                           cpu->cpu_index, 0)) {
        flush_all_tlbs();
    }
}

static void load_barrier(CPUState *cpu)
{
    cm_cpu_load_barrier(&cache->model, cpu->cpu_index);
}

static void coherent_write(uint64_t ram_addr, uint64_t length)
{
    if (ram_addr >= cache->ram_addr && ram_addr - cache->ram_addr < cache->ram_size) {
        cm_coherent_write(&cache->model, cache->ram_base + (ram_addr - cache->ram_addr), length);
    }
}

static const CosimCacheHooks hooks = {
    .watch_page = watch_page,
    .access = cpu_access,
    .maintenance = maintenance,
    .load_barrier = load_barrier,
    .coherent_write = coherent_write,
};

static void poll_tracking(void *opaque)
{
    CosimCacheState *s = opaque;
    uint64_t generation = qatomic_read(&s->model.header->track_generation);

    if (generation != s->seen_generation) {
        s->seen_generation = generation;
        flush_all_tlbs();
    }
    timer_mod(s->poll, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + TRACK_POLL_MS);
}

static void cosim_cache_realize(DeviceState *dev, Error **errp)
{
    CosimCacheState *s = COSIM_CACHE(dev);
    MemoryRegionSection ram;
    size_t size;
    void *state;
    int fd, rc;

    if (cache) {
        error_setg(errp, "cosim-cache: only one per machine");
        return;
    }
    if (!s->state_path || !s->ram_size) {
        error_setg(errp, "cosim-cache needs state, ram-base and ram-size properties");
        return;
    }
    ram = memory_region_find(get_system_memory(), s->ram_base, s->ram_size);
    if (!ram.mr || !memory_region_is_ram(ram.mr) || int128_get64(ram.size) != s->ram_size) {
        if (ram.mr) {
            memory_region_unref(ram.mr);
        }
        error_setg(errp, "cosim-cache: no RAM of %#" PRIx64 " bytes at %#" PRIx64,
                   s->ram_size, s->ram_base);
        return;
    }
    fd = open(s->state_path, O_RDWR);
    if (fd < 0) {
        error_setg_errno(errp, errno, "cosim-cache: cannot open %s", s->state_path);
        goto out;
    }
    size = cm_state_size(s->ram_size);
    state = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (state == MAP_FAILED) {
        error_setg_errno(errp, errno, "cosim-cache: cannot map %s", s->state_path);
        goto out;
    }
    rc = cm_attach(&s->model, state, size,
                   (uint8_t *)memory_region_get_ram_ptr(ram.mr) + ram.offset_within_region,
                   s->ram_base, s->ram_size, s->mode);
    if (rc) {
        munmap(state, size);
        error_setg(errp, "cosim-cache: %s does not fit this machine (error %d)", s->state_path,
                   rc);
        goto out;
    }
    s->ram_addr = memory_region_get_ram_addr(ram.mr) + ram.offset_within_region;
    cache = s;
    s->seen_generation = s->model.header->track_generation;
    s->poll = timer_new_ms(QEMU_CLOCK_REALTIME, poll_tracking, s);
    timer_mod(s->poll, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + TRACK_POLL_MS);
    cosim_cache_hooks = &hooks;
out:
    memory_region_unref(ram.mr);
}

static const Property cosim_cache_properties[] = {
    DEFINE_PROP_STRING("state", CosimCacheState, state_path),
    DEFINE_PROP_UINT32("mode", CosimCacheState, mode, CM_MODE_REPORT),
    DEFINE_PROP_UINT64("ram-base", CosimCacheState, ram_base, 0),
    DEFINE_PROP_UINT64("ram-size", CosimCacheState, ram_size, 0),
};

static void cosim_cache_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);

    dc->realize = cosim_cache_realize;
    dc->desc = "cosim: the CPU side of a data-cache model for non-coherent DMA";
    device_class_set_props(dc, cosim_cache_properties);
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
}

static const TypeInfo cosim_cache_info = {
    .name = TYPE_COSIM_CACHE,
    .parent = TYPE_DEVICE,
    .instance_size = sizeof(CosimCacheState),
    .class_init = cosim_cache_class_init,
};

static void cosim_cache_register_types(void)
{
    type_register_static(&cosim_cache_info);
}

type_init(cosim_cache_register_types)
