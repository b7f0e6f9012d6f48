/*
 * cosim's CPU data-cache model: the state machine shared by QEMU and the harness (see model.h).
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */
#include "model.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

#define LINE_MASK ((uint64_t)CM_LINE_SIZE - 1)
#define ALL_BYTES UINT64_MAX

static size_t align_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static size_t events_offset(void)
{
    return CM_HEADER_SIZE;
}

static size_t pages_offset(void)
{
    return events_offset() + CM_EVENTS * sizeof(cm_event);
}

static size_t lines_offset(uint64_t ram_size)
{
    return align_up(pages_offset() + ram_size / CM_PAGE_SIZE, CM_PAGE_SIZE);
}

static size_t shadows_offset(uint64_t ram_size)
{
    return lines_offset(ram_size) + ram_size / CM_LINE_SIZE * sizeof(cm_line);
}

size_t cm_state_size(uint64_t ram_size)
{
    return shadows_offset(ram_size) + ram_size;
}

int cm_attach(cm_state *s, void *state, size_t state_size, void *ram, uint64_t ram_base,
              uint64_t ram_size, uint32_t mode)
{
    uint8_t *base = state;

    if (ram_size % CM_PAGE_SIZE || state_size < cm_state_size(ram_size) ||
        (mode != CM_MODE_REPORT && mode != CM_MODE_EMULATE)) {
        return -EINVAL;
    }
    s->header = state;
    s->events = (cm_event *)(base + events_offset());
    s->pages = base + pages_offset();
    s->lines = (cm_line *)(base + lines_offset(ram_size));
    s->shadows = base + shadows_offset(ram_size);
    s->ram = ram;
    s->state_size = state_size;
    if (s->header->magic == 0) {
        s->header->version = CM_VERSION;
        s->header->mode = mode;
        s->header->ram_base = ram_base;
        s->header->ram_size = ram_size;
        __atomic_store_n(&s->header->magic, CM_MAGIC, __ATOMIC_RELEASE);
    }
    if (s->header->magic != CM_MAGIC || s->header->version != CM_VERSION ||
        s->header->ram_base != ram_base || s->header->ram_size != ram_size ||
        s->header->mode != mode) {
        return -EPROTO;
    }
    return 0;
}

/* One lock for the whole model: QEMU's vCPU threads and the harness's DMA threads share it. */
static void lock(cm_state *s)
{
    unsigned spins = 0;

    while (__atomic_exchange_n(&s->header->lock, 1, __ATOMIC_ACQUIRE)) {
        if (++spins % 64 == 0) {
            sched_yield(); /* the holder may be a descheduled thread on this core */
        }
    }
}

static void unlock(cm_state *s)
{
    __atomic_store_n(&s->header->lock, 0, __ATOMIC_RELEASE);
}

static bool in_ram(const cm_state *s, uint64_t paddr, uint64_t len)
{
    uint64_t base = s->header->ram_base;

    return paddr >= base && len <= s->header->ram_size &&
           paddr - base <= s->header->ram_size - len;
}

static uint64_t line_index(const cm_state *s, uint64_t paddr)
{
    return (paddr - s->header->ram_base) / CM_LINE_SIZE;
}

static uint8_t *file_line(const cm_state *s, uint64_t index)
{
    return s->ram + index * CM_LINE_SIZE;
}

static uint8_t *shadow_line(const cm_state *s, uint64_t index)
{
    return s->shadows + index * CM_LINE_SIZE;
}

static uint64_t byte_mask(uint64_t offset, uint64_t len)
{
    uint64_t mask = len >= 64 ? ALL_BYTES : ((uint64_t)1 << len) - 1;

    return mask << offset;
}

bool cm_page_tracked(const cm_state *s, uint64_t paddr)
{
    return in_ram(s, paddr, 1) &&
           __atomic_load_n(&s->pages[(paddr - s->header->ram_base) / CM_PAGE_SIZE],
                           __ATOMIC_ACQUIRE);
}

static bool track_page_locked(cm_state *s, uint64_t paddr)
{
    uint64_t page = (paddr - s->header->ram_base) / CM_PAGE_SIZE;
    cm_line *lines = s->lines + page * CM_LINES_PER_PAGE;

    if (s->pages[page]) {
        return false;
    }
    /* Nothing is known of the page's past: the CPU may hold any of its lines, none dirty. */
    for (unsigned i = 0; i < CM_LINES_PER_PAGE; i++) {
        memset(&lines[i], 0, sizeof(lines[i]));
        lines[i].flags = CM_HELD;
    }
    __atomic_store_n(&s->pages[page], CM_PAGE_TRACKED, __ATOMIC_RELEASE);
    s->header->counters[CM_COUNT_PAGES_TRACKED]++;
    return true;
}

bool cm_track_page(cm_state *s, uint64_t paddr)
{
    bool started;

    if (!in_ram(s, paddr, 1)) {
        return false;
    }
    lock(s);
    started = track_page_locked(s, paddr);
    unlock(s);
    return started;
}

static void emit(cm_state *s, cm_line *line, uint32_t kind, uint32_t agent, uint64_t line_addr,
                 uint64_t bytes, uint64_t other, uint64_t pc, uint64_t lr, uint64_t transfer,
                 bool device)
{
    cm_header *h = s->header;
    cm_event *e;

    if (line->reported & (1u << kind)) {
        return;
    }
    line->reported |= 1u << kind;
    if (h->event_head - h->event_tail >= CM_EVENTS) {
        h->events_dropped++;
        return;
    }
    e = &s->events[h->event_head % CM_EVENTS];
    *e = (cm_event){
        .kind = kind, .agent = agent, .line = line_addr, .bytes = bytes, .other = other,
        .pc = pc, .seq = h->seq, .transfer = transfer,
        .peer = device ? line->store_cpu : line->device_agent, .lr = lr,
    };
    h->event_head++;
}

/* The CPU's line is about to differ from RAM: keep RAM's bytes in the shadow. */
static void open_shadow(cm_state *s, cm_line *line, uint64_t index)
{
    if (!(line->flags & CM_SHADOW)) {
        memcpy(shadow_line(s, index), file_line(s, index), CM_LINE_SIZE);
        line->flags |= CM_SHADOW;
        line->flags &= ~CM_FILE_IS_RAM;
    }
}

static void swap_views(cm_state *s, cm_line *line, uint64_t index)
{
    uint8_t held[CM_LINE_SIZE];

    memcpy(held, file_line(s, index), CM_LINE_SIZE);
    memcpy(file_line(s, index), shadow_line(s, index), CM_LINE_SIZE);
    memcpy(shadow_line(s, index), held, CM_LINE_SIZE);
    line->flags ^= CM_FILE_IS_RAM;
}

/* The file shows what the next access sees: the CPU's line (cacheable) or RAM (uncached). */
static void show(cm_state *s, cm_line *line, uint64_t index, bool ram)
{
    if ((line->flags & CM_SHADOW) && !!(line->flags & CM_FILE_IS_RAM) != ram) {
        swap_views(s, line, index);
    }
}

/* Where RAM's bytes of a line are: the shadow while the file shows the CPU's line. */
static uint8_t *ram_view(cm_state *s, cm_line *line, uint64_t index)
{
    bool shadowed = (line->flags & (CM_SHADOW | CM_FILE_IS_RAM)) == CM_SHADOW;

    return shadowed ? shadow_line(s, index) : file_line(s, index);
}

/* The views become one: RAM's (@ram) or the CPU's line. */
static void close_shadow(cm_state *s, cm_line *line, uint64_t index, bool ram)
{
    show(s, line, index, ram);
    line->flags &= ~(CM_SHADOW | CM_FILE_IS_RAM);
}

typedef struct {
    cm_pc_fn fn;
    void *ctx;
    uint64_t pc;
    uint64_t lr;
    bool known;
} lazy_pc;

static uint64_t pc_of(lazy_pc *pc)
{
    if (!pc->known) {
        pc->pc = pc->fn(pc->ctx, &pc->lr);
        pc->known = true;
    }
    return pc->pc;
}

/*
 * A load of @bytes of a line: could it have been performed before an earlier load (since the
 * CPU's last load barrier) that saw a newer device write, and so have missed an older one?
 */
static void check_load_order(cm_state *s, cm_line *line, uint64_t line_addr, uint64_t bytes,
                             uint32_t cpu, lazy_pc *pc)
{
    cm_load_order *order = &s->header->cpus[cpu];
    uint64_t newest = 0, missed = 0;

    for (unsigned w = 0; w < CM_WORDS; w++) {
        uint64_t seq = line->device_seq[w];

        if (!(bytes >> (w * 8) & 0xff) || seq <= order->barrier_seq) {
            continue; /* not read, or written before the barrier: this load sees it */
        }
        newest = seq > newest ? seq : newest;
        if (seq < order->newest_seq) {
            missed |= (bytes >> (w * 8) & 0xff) << (w * 8);
        }
    }
    if (missed) {
        emit(s, line, CM_LOAD_ORDER, cpu, line_addr, missed, order->newest_line, pc_of(pc),
             order->newest_pc, 0, false);
    }
    if (newest > order->newest_seq) {
        order->newest_seq = newest;
        order->newest_line = line_addr;
        order->newest_pc = pc_of(pc);
    }
}

static void cpu_line_access(cm_state *s, uint64_t index, uint64_t bytes, bool store, bool cached,
                            uint32_t cpu, lazy_pc *pc)
{
    cm_line *line = &s->lines[index];
    uint64_t line_addr = s->header->ram_base + index * CM_LINE_SIZE;

    if (s->header->mode == CM_MODE_EMULATE) {
        show(s, line, index, !cached);
    }
    if (!store && cpu < CM_CPUS) {
        check_load_order(s, line, line_addr, bytes, cpu, pc);
    }
    if (!cached) { /* a Normal-NC or Device access goes to RAM and leaves the cache alone */
        s->pages[index / CM_LINES_PER_PAGE] |= CM_PAGE_COHERENT;
        return;
    }
    if (!(line->flags & CM_HELD)) {
        line->hold_pc = pc_of(pc);
        line->flags |= CM_HELD;
    }
    if (!store) {
        if (line->stale & bytes) {
            emit(s, line, CM_CPU_READ_STALE, cpu, line_addr, bytes & line->stale, line->stale,
                 pc_of(pc), pc->lr, 0, false);
        }
        return;
    }
    if (s->header->mode == CM_MODE_EMULATE && !line->dirty) {
        open_shadow(s, line, index);
    }
    /* The CPU's copy of these bytes is now the newest; a device's bytes under them are lost when
     * the line is written back. */
    line->overwritten |= line->stale & bytes;
    line->stale &= ~bytes;
    line->dirty |= bytes;
    line->store_pc = pc_of(pc);
    line->store_lr = pc->lr;
    line->store_cpu = cpu;
}

void cm_cpu_access_lazy(cm_state *s, uint64_t paddr, uint32_t size, bool store, bool cached,
                        uint32_t cpu, cm_pc_fn fn, void *ctx)
{
    lazy_pc pc = { .fn = fn, .ctx = ctx };

    if (!size || !in_ram(s, paddr, size)) {
        return;
    }
    lock(s);
    s->header->seq++;
    s->header->counters[store ? CM_COUNT_CPU_STORES : CM_COUNT_CPU_LOADS]++;
    for (uint64_t at = paddr, end = paddr + size; at < end;) {
        uint64_t offset = at & LINE_MASK;
        uint64_t n = CM_LINE_SIZE - offset < end - at ? CM_LINE_SIZE - offset : end - at;

        if (cm_page_tracked(s, at)) {
            cpu_line_access(s, line_index(s, at), byte_mask(offset, n), store, cached, cpu, &pc);
        }
        at += n;
    }
    unlock(s);
}

static uint64_t known_pc(void *ctx, uint64_t *lr)
{
    *lr = 0;
    return *(uint64_t *)ctx;
}

void cm_cpu_access(cm_state *s, uint64_t paddr, uint32_t size, bool store, bool cached,
                   uint32_t cpu, uint64_t pc)
{
    cm_cpu_access_lazy(s, paddr, size, store, cached, cpu, known_pc, &pc);
}

bool cm_cpu_maintenance(cm_state *s, uint64_t paddr, uint32_t op, uint32_t cpu, uint64_t pc)
{
    uint64_t index, line_addr = paddr & ~LINE_MASK;
    bool emulate = s->header->mode == CM_MODE_EMULATE;
    bool started, writeback;
    cm_line *line;

    if (!in_ram(s, line_addr, CM_LINE_SIZE) || op < CM_CLEAN || op > CM_CLEAN_INVALIDATE) {
        return false;
    }
    lock(s);
    s->header->seq++;
    s->header->counters[CM_COUNT_MAINTENANCE]++;
    started = track_page_locked(s, line_addr);
    index = line_index(s, line_addr);
    s->pages[index / CM_LINES_PER_PAGE] &= ~CM_PAGE_COHERENT;
    line = &s->lines[index];
    writeback = line->dirty && op != CM_INVALIDATE;
    if (op == CM_INVALIDATE && line->dirty) {
        emit(s, line, CM_CPU_WRITE_DISCARDED, cpu, line_addr, line->dirty, line->dirty,
             line->store_pc, line->store_lr, 0, false);
    }
    if (op == CM_CLEAN_INVALIDATE && writeback && (line->stale | line->overwritten)) {
        emit(s, line, CM_WRITEBACK_OVER_DEVICE, cpu, line_addr, line->stale | line->overwritten,
             line->dirty, line->store_pc, line->store_lr, 0, false);
    }
    if (emulate && (line->flags & CM_SHADOW) && (writeback || op != CM_CLEAN)) {
        /* A write-back puts the CPU's whole line in RAM, over whatever a device put there; an
         * invalidate drops it, and the CPU's next access fetches RAM. */
        close_shadow(s, line, index, !writeback);
    }
    if (writeback) { /* RAM now holds the CPU's line: nothing in it is stale */
        line->stale = 0;
        line->overwritten = 0;
    }
    line->dirty = 0;
    if (op != CM_CLEAN) {
        line->stale = 0;
        line->overwritten = 0;
        line->flags &= ~CM_HELD;
    }
    line->reported = 0;
    unlock(s);
    return started;
}

/* Only the CPU's own thread touches its ordering state: no lock (barriers are frequent). */
void cm_cpu_load_barrier(cm_state *s, uint32_t cpu)
{
    if (cpu < CM_CPUS) {
        s->header->cpus[cpu].barrier_seq = __atomic_load_n(&s->header->seq, __ATOMIC_RELAXED);
        s->header->cpus[cpu].newest_seq = 0;
    }
}

void cm_coherent_write(cm_state *s, uint64_t paddr, uint64_t len)
{
    if (!len || !in_ram(s, paddr, len)) {
        return;
    }
    lock(s);
    for (uint64_t at = paddr, end = paddr + len; at < end;) {
        uint64_t offset = at & LINE_MASK;
        uint64_t n = CM_LINE_SIZE - offset < end - at ? CM_LINE_SIZE - offset : end - at;

        if (cm_page_tracked(s, at)) {
            uint64_t index = line_index(s, at), bytes = byte_mask(offset, n);
            cm_line *line = &s->lines[index];

            line->dirty &= ~bytes;
            line->stale &= ~bytes;
            line->overwritten &= ~bytes;
            if (line->flags & CM_SHADOW) { /* RAM and the CPU's copy agree on these bytes */
                memcpy(shadow_line(s, index) + offset, file_line(s, index) + offset, n);
            }
        }
        at += n;
    }
    unlock(s);
}

uint32_t cm_device_read(cm_state *s, uint64_t paddr, uint64_t len, uint32_t agent,
                        uint64_t transfer, uint8_t *data)
{
    uint32_t started = 0;

    if (!len || !in_ram(s, paddr, len)) {
        return 0;
    }
    lock(s);
    s->header->seq++;
    s->header->counters[CM_COUNT_DEVICE_READS]++;
    for (uint64_t at = paddr, end = paddr + len; at < end;) {
        uint64_t offset = at & LINE_MASK;
        uint64_t n = CM_LINE_SIZE - offset < end - at ? CM_LINE_SIZE - offset : end - at;
        uint64_t index = line_index(s, at), bytes = byte_mask(offset, n);
        cm_line *line = &s->lines[index];

        started += track_page_locked(s, at);
        if (line->dirty & bytes) {
            emit(s, line, CM_DEVICE_READ_UNCLEAN, agent, at & ~LINE_MASK, line->dirty & bytes,
                 line->dirty, line->store_pc, line->store_lr, transfer, true);
        }
        if (s->header->mode == CM_MODE_EMULATE && (line->flags & CM_SHADOW)) {
            memcpy(data + (at - paddr), ram_view(s, line, index) + offset, n);
        }
        at += n;
    }
    if (started) {
        s->header->track_generation++; /* QEMU refills its TLBs to watch the new pages */
    }
    unlock(s);
    return started;
}

uint32_t cm_device_write(cm_state *s, uint64_t paddr, uint64_t len, uint32_t agent,
                         uint64_t transfer, const uint8_t *data)
{
    bool emulate = s->header->mode == CM_MODE_EMULATE;
    uint32_t started = 0;

    if (!len || !in_ram(s, paddr, len)) {
        return 0;
    }
    lock(s);
    s->header->seq++;
    s->header->counters[CM_COUNT_DEVICE_WRITES]++;
    for (uint64_t at = paddr, end = paddr + len; at < end;) {
        uint64_t offset = at & LINE_MASK;
        uint64_t n = CM_LINE_SIZE - offset < end - at ? CM_LINE_SIZE - offset : end - at;
        uint64_t index = line_index(s, at), bytes = byte_mask(offset, n);
        uint64_t line_addr = at & ~LINE_MASK;
        cm_line *line = &s->lines[index];

        started += track_page_locked(s, at);
        if (line->dirty & bytes) {
            emit(s, line, CM_DEVICE_WRITE_OVER_DIRTY, agent, line_addr, line->dirty & bytes,
                 line->dirty, line->store_pc, line->store_lr, transfer, true);
        } else if (line->dirty) {
            emit(s, line, CM_DEVICE_WRITE_SHARED_LINE, agent, line_addr, bytes, line->dirty,
                 line->store_pc, line->store_lr, transfer, true);
        }
        line->device_agent = agent;
        for (unsigned w = offset / 8; w <= (offset + n - 1) / 8; w++) {
            line->device_seq[w] = s->header->seq;
        }
        if ((line->flags & CM_HELD) && !(s->pages[index / CM_LINES_PER_PAGE] & CM_PAGE_COHERENT)) {
            /* RAM changes under the CPU's copy of the line, which it keeps seeing. */
            line->stale |= bytes;
            line->overwritten &= ~bytes;
            if (emulate) {
                open_shadow(s, line, index);
                memcpy(ram_view(s, line, index) + offset, data + (at - paddr), n);
            }
        } else if (emulate) {
            memcpy(ram_view(s, line, index) + offset, data + (at - paddr), n);
        }
        at += n;
    }
    if (started) {
        s->header->track_generation++; /* QEMU refills its TLBs to watch the new pages */
    }
    unlock(s);
    return started;
}

void cm_line_state(cm_state *s, uint64_t paddr, cm_line *out)
{
    memset(out, 0, sizeof(*out));
    if (cm_page_tracked(s, paddr)) {
        lock(s);
        *out = s->lines[line_index(s, paddr)];
        unlock(s);
    }
}

uint32_t cm_drain(cm_state *s, cm_event *out, uint32_t max)
{
    cm_header *h = s->header;
    uint32_t n = 0;

    lock(s);
    while (n < max && h->event_tail != h->event_head) {
        out[n++] = s->events[h->event_tail % CM_EVENTS];
        h->event_tail++;
    }
    unlock(s);
    return n;
}
