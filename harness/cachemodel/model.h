/*
 * cosim's model of the CPU data cache as a non-coherent bus master sees it.
 *
 * One state file, shared by QEMU (the CPU side: loads, stores and DC maintenance by physical
 * address) and the harness (the device side: every DMA transfer on the bus).  Per 64-byte line:
 * which bytes the CPU dirtied since the line's last clean, whether the CPU may hold the line (it
 * accessed it since the line's last invalidate), which bytes a device wrote while the CPU held the
 * line (the CPU's copy of them is stale until it invalidates), and (emulate mode) the line's RAM
 * contents when they differ from what the CPU sees.
 *
 * A line the CPU has not accessed since its last invalidate holds nothing: a later access fetches
 * RAM.  Speculative fetches are not modelled; Linux relies on the same for the linear-map alias of
 * a coherent buffer on a non-coherent device, which the CPU never touches.
 *
 * Hazards are judged where silicon loses data, so that memory a new owner reuses after a buffer's
 * life (which Linux neither cleans nor invalidates) raises nothing: a device reading bytes the CPU
 * wrote and never cleaned, a device writing a line the CPU holds dirty, the CPU reading bytes its
 * copy has stale, an invalidate throwing away CPU writes, and a clean-and-invalidate writing the
 * CPU's line back over bytes a device wrote.  Writes by coherent masters (QEMU's own devices)
 * update the CPU's line, as snooping hardware does.  Only pages that a DC operation or a device
 * touched are tracked; QEMU sends only those pages' accesses here.
 *
 * A page the CPU accesses through a Normal-NC mapping is a coherent buffer's (dma_alloc_coherent
 * remaps its pages so): device writes to it leave the lines of its cacheable alias alone.  arm64
 * Linux only cleans that alias when it allocates the buffer (arch_dma_prep_coherent), so clean
 * copies may stay in the cache; the driver never reads through the alias, and whoever gets the
 * pages after the buffer is freed either writes them first or reads bytes nobody gave it (a maple
 * node's unused slot), which no DMA mistake causes.  The next DC operation on the page (a
 * streaming mapping of the reused memory) makes it an ordinary page again.
 *
 * Loads are weakly ordered: with no load barrier between them, a load may be performed before an
 * earlier one.  When the earlier load saw a device write made after the CPU's last barrier, and
 * the later load reads a word the device wrote before that (also after the barrier), the later
 * load could have missed it: a descriptor's fields read after its status without dma_rmb().
 *
 * In emulate mode guest RAM (the file QEMU and the harness share) holds what the next CPU access
 * sees (the CPU's line for a cacheable access, RAM for a Normal-NC one: a coherent buffer's), and
 * a line's shadow holds the other view whenever the two differ.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#ifndef COSIM_CACHE_MODEL_H
#define COSIM_CACHE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CM_MAGIC 0x4843534du /* "MSCH" */
#define CM_VERSION 1
#define CM_LINE_SIZE 64
#define CM_PAGE_SIZE 4096
#define CM_LINES_PER_PAGE (CM_PAGE_SIZE / CM_LINE_SIZE)
#define CM_EVENTS 8192 /* a power of two */
#define CM_HEADER_SIZE 4096
#define CM_CPUS 8
#define CM_WORDS (CM_LINE_SIZE / 8) /* device writes are ordered per 8-byte word */

enum cm_mode { CM_MODE_REPORT = 1, CM_MODE_EMULATE = 2 };

/* What a hazard is; the harness names the fix. */
enum cm_kind {
    CM_DEVICE_READ_UNCLEAN = 1,  /* a device read bytes the CPU wrote and never cleaned */
    CM_DEVICE_WRITE_OVER_DIRTY,  /* a device wrote bytes the CPU holds dirty */
    CM_DEVICE_WRITE_SHARED_LINE, /* a device wrote a line whose other bytes the CPU holds dirty */
    CM_CPU_READ_STALE,           /* the CPU read stale bytes: a device wrote them under its copy */
    CM_WRITEBACK_OVER_DEVICE,    /* a clean-and-invalidate wrote the CPU's line over device bytes */
    CM_CPU_WRITE_DISCARDED,      /* an invalidate threw away bytes the CPU wrote */
    CM_LOAD_ORDER,               /* a load may be performed before an earlier one that saw a
                                  * later device write: no load barrier between them */
    CM_KINDS
};

enum cm_maintenance { CM_CLEAN = 1, CM_INVALIDATE = 2, CM_CLEAN_INVALIDATE = 3 };

enum cm_line_flags {
    CM_HELD = 1,   /* the CPU may hold the line: it accessed it since the last invalidate */
    CM_SHADOW = 2, /* emulate: RAM differs from the CPU's line; the shadow holds one of them */
    CM_FILE_IS_RAM = 4, /* with CM_SHADOW: the file shows RAM (for uncached accesses), the shadow
                         * the CPU's line; otherwise the file shows the CPU's line */
};

enum cm_page_flags {
    CM_PAGE_TRACKED = 1,
    CM_PAGE_COHERENT = 2, /* the CPU accessed it uncached since the last DC operation on it */
};

enum cm_counter {
    CM_COUNT_CPU_LOADS, CM_COUNT_CPU_STORES, CM_COUNT_MAINTENANCE, CM_COUNT_DEVICE_READS,
    CM_COUNT_DEVICE_WRITES, CM_COUNT_PAGES_TRACKED, CM_COUNTERS
};

typedef struct {
    uint32_t kind;     /* enum cm_kind */
    uint32_t agent;    /* CPU index, or the device master's number */
    uint64_t line;     /* physical address of the line */
    uint64_t bytes;    /* bit i = byte i of the line: the bytes the access involved */
    uint64_t other;    /* the CPU's dirty bytes (CPU_READ_STALE: the line's stale bytes;
                        * CM_LOAD_ORDER: the line of the earlier load) */
    uint64_t pc;       /* the CPU access, or the CPU's last store to the line (device events) */
    uint64_t seq;      /* the model's operation number: orders events with each other */
    uint64_t transfer; /* device events: the harness's number of the transfer */
    uint64_t peer;     /* device events: the CPU of that store; CPU events: the device's number */
    uint64_t lr;       /* the link register with @pc: the caller, when @pc is in a leaf routine
                        * (CM_LOAD_ORDER: the earlier load's pc) */
} cm_event;

typedef struct {
    uint64_t dirty;    /* bytes the CPU wrote since the line's last clean */
    uint64_t stale;    /* bytes a device wrote while the CPU held the line */
    uint64_t overwritten; /* device bytes the CPU then wrote over without invalidating */
    uint64_t store_pc; /* the CPU's last store to the line */
    uint32_t flags;    /* enum cm_line_flags */
    uint32_t store_cpu;
    uint32_t reported; /* bit per cm_kind: said once until the line's next maintenance */
    uint32_t device_agent; /* the device that last wrote the line */
    uint64_t hold_pc;      /* the CPU access that brought the line in (0: before tracking) */
    uint64_t store_lr;     /* the link register at that store */
    uint64_t device_seq[CM_WORDS]; /* the model's operation number of each 8-byte word's last
                                    * device write */
} cm_line;

/* One CPU's loads since its last load barrier (DMB/DSB ordering loads, LDAR). */
typedef struct {
    uint64_t barrier_seq;
    uint64_t newest_seq;  /* the newest device write a load saw since then */
    uint64_t newest_line; /* that load's line and PC */
    uint64_t newest_pc;
} cm_load_order;

typedef struct {
    uint32_t magic;
    uint32_t version;
    uint32_t mode;
    volatile uint32_t lock;
    uint64_t ram_base;
    uint64_t ram_size;
    uint64_t seq;
    volatile uint64_t track_generation; /* bumped when a device starts a page's tracking */
    volatile uint64_t event_head;       /* written by producers */
    volatile uint64_t event_tail;       /* written by the harness, which drains */
    uint64_t events_dropped;
    uint64_t counters[CM_COUNTERS];
    cm_load_order cpus[CM_CPUS];
} cm_header;

/* The state file: header, event ring, one byte per RAM page, line records, line shadows. */
typedef struct {
    cm_header *header;
    cm_event *events;
    uint8_t *pages;
    cm_line *lines;
    uint8_t *shadows;
    uint8_t *ram; /* guest RAM as the CPU sees it */
    size_t state_size;
} cm_state;

size_t cm_state_size(uint64_t ram_size);
/* Fills @s from a mapping of the state file; a fresh file (all zeros) is initialised. */
int cm_attach(cm_state *s, void *state, size_t state_size, void *ram, uint64_t ram_base,
              uint64_t ram_size, uint32_t mode);

bool cm_page_tracked(const cm_state *s, uint64_t paddr);
/* Starts tracking @paddr's page; true when it was not tracked before. */
bool cm_track_page(cm_state *s, uint64_t paddr);

/*
 * The CPU side (QEMU): a cacheable access within one line or two, and DC ops by line.  Finding
 * an instruction's PC costs QEMU a search, so the model asks @pc_of(@ctx, &lr) only when it needs
 * it; it returns the PC and sets the link register.
 */
typedef uint64_t (*cm_pc_fn)(void *ctx, uint64_t *lr);
void cm_cpu_access_lazy(cm_state *s, uint64_t paddr, uint32_t size, bool store, bool cached,
                        uint32_t cpu, cm_pc_fn pc_of, void *ctx);
void cm_cpu_access(cm_state *s, uint64_t paddr, uint32_t size, bool store, bool cached,
                   uint32_t cpu, uint64_t pc);
bool cm_cpu_maintenance(cm_state *s, uint64_t paddr, uint32_t op, uint32_t cpu, uint64_t pc);
/* DMB/DSB ordering loads, or a load-acquire: later loads are performed after earlier ones. */
void cm_cpu_load_barrier(cm_state *s, uint32_t cpu);
/* A coherent master (one of QEMU's own devices) wrote RAM: the CPU's copy follows. */
void cm_coherent_write(cm_state *s, uint64_t paddr, uint64_t len);

/*
 * The device side (the harness's bus), one call per transfer.  A read gets @data as RAM-file
 * contents and, in emulate mode, patches in RAM's true bytes.  A write in emulate mode lands
 * where silicon puts it (the file or a line's shadow) and the caller must not store it again; in
 * report mode the caller stores it.  Both return how many pages they started tracking.
 */
uint32_t cm_device_read(cm_state *s, uint64_t paddr, uint64_t len, uint32_t agent,
                        uint64_t transfer, uint8_t *data);
uint32_t cm_device_write(cm_state *s, uint64_t paddr, uint64_t len, uint32_t agent,
                         uint64_t transfer, const uint8_t *data);

/* A copy of the record of the line holding @paddr (zeros for an untracked page). */
void cm_line_state(cm_state *s, uint64_t paddr, cm_line *out);

/* Copies up to @max undrained events to @out and consumes them. */
uint32_t cm_drain(cm_state *s, cm_event *out, uint32_t max);

#endif
