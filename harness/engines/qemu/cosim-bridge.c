/*
 * cosim's devices in QEMU.
 *
 * cosim-bridge: forwards one MMIO window and its interrupt lines to the cosim harness, and runs
 * the model's scheduled work when the guest's virtual clock reaches it.
 * cosim-clock: the harness's hold on an idle guest's time (see include/system/cosim-clock.h).
 *
 * The wire protocol is defined in harness/protocol.py; the structs below mirror it.  The device
 * is a plain (bus-less) device so that board code's list of allowed sysbus devices does not apply;
 * it maps its window straight into system memory and wires its IRQ outputs to GIC SPIs.
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/sockets.h"
#include "qemu/timer.h"
#include "qapi/error.h"
#include "exec/address-spaces.h"
#include "exec/memory.h"
#include "hw/core/cpu.h"
#include "hw/irq.h"
#include "hw/qdev-core.h"
#include "hw/qdev-properties.h"
#include "hw/sysbus.h"
#include "qom/object.h"
#include "system/cosim-clock.h"

#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#define COSIM_MAGIC 0x4D495343u /* "CSIM" */
#define COSIM_PROTOCOL_VERSION 6
#define COSIM_MAX_IRQS 64
#define COSIM_MAX_CHANGES 256
#define COSIM_MAX_BRIDGES 256
#define COSIM_HANDSHAKE_TIMEOUT_S 20
#define COSIM_MAX_POSTED_OFFSETS 16
#define COSIM_FLUSH_NS 10000000 /* posted writes wait at most this long (host time) for an access */

enum { CHANNEL_SYNC = 0, CHANNEL_ASYNC = 1 };
enum {
    OP_READ = 1, OP_WRITE = 2, OP_IRQ = 3, OP_TICK = 4, OP_WAKE = 5, OP_DEADLINE = 6,
    OP_DRAIN = 8,
};
enum { STATUS_OK = 0, STATUS_BUS_ERROR = 1 };
enum { HELLO_OK = 0, HELLO_VERSION_MISMATCH = 1 };

typedef struct QEMU_PACKED {
    uint32_t magic;
    uint16_t version;
    uint16_t channel;
    uint32_t pid;
    uint32_t reserved;
    char name[64];
} CosimHello;

typedef struct QEMU_PACKED {
    uint32_t magic;
    uint16_t version;
    uint16_t status;
    uint32_t irq_count;
    uint32_t reserved;
} CosimHelloAck;

typedef struct QEMU_PACKED {
    uint8_t op;
    uint8_t size;
    uint16_t cpu;
    uint32_t seq;
    uint64_t offset;
    uint64_t data;
    int64_t vclock_ns;
} CosimRequest;

/* A posted write in the ring (see protocol.py): host byte order, the file is shared on one host */
typedef struct QEMU_PACKED {
    uint16_t index; /* the bridge's */
    uint8_t size;
    uint8_t reserved[5];
    uint64_t offset;
    uint64_t data;
    int64_t vclock_ns;
} CosimPosted;

typedef struct QEMU_PACKED {
    uint64_t head; /* entries QEMU wrote */
    uint64_t tail; /* entries the harness served */
    uint32_t capacity;
    uint32_t entry_size;
    uint8_t reserved[40];
} CosimRingHeader;

/* An IRQ level, a deadline or a wake-up, for the bridge numbered "index" (see protocol.py) */
typedef struct QEMU_PACKED {
    uint16_t op;
    uint16_t index;
    uint16_t line;
    uint16_t level;
    int64_t value; /* IRQ: sequence number; DEADLINE: virtual-clock ns, < 0: none */
} CosimChange;

typedef struct QEMU_PACKED {
    uint32_t seq;
    uint8_t status;
    uint8_t reserved;
    uint16_t nchanges;
    uint64_t data;
    CosimChange change[COSIM_MAX_CHANGES];
} CosimReply;

#define TYPE_COSIM_BRIDGE "cosim-bridge"
OBJECT_DECLARE_SIMPLE_TYPE(CosimBridgeState, COSIM_BRIDGE)

struct CosimBridgeState {
    DeviceState parent_obj;

    char *name;
    uint32_t index;
    char *socket_path;
    char *irq_list;
    char *posted_list;
    char *ring_path;
    uint64_t base;
    uint64_t size;

    MemoryRegion mmio;
    QEMUTimer *deadline; /* the model's next scheduled work: a TICK when the guest's time is there */
    int sync_fd;
    int async_fd;
    uint32_t seq;
    unsigned nposted;
    uint64_t posted[COSIM_MAX_POSTED_OFFSETS]; /* offsets whose writes the vCPU does not wait for */
    unsigned nirqs;
    qemu_irq irqs[COSIM_MAX_IRQS];
    uint64_t irq_seq[COSIM_MAX_IRQS];
};

static CosimBridgeState *cosim_bridges[COSIM_MAX_BRIDGES]; /* by index */
static const volatile uint8_t *cosim_idle_hold; /* the harness's byte (cosim-clock); NULL: none */

bool cosim_idle_time_held(void)
{
    if (!cosim_idle_hold || !*cosim_idle_hold) {
        return false;
    }
    for (unsigned i = 0; i < COSIM_MAX_BRIDGES; i++) {
        if (cosim_bridges[i] && timer_pending(cosim_bridges[i]->deadline)) {
            return false; /* a model has work scheduled: the guest's time goes on to it */
        }
    }
    return true;
}

static G_NORETURN void cosim_lost(CosimBridgeState *s, const char *what)
{
    error_report("cosim-bridge '%s': %s: the harness is gone, exiting", s->name, what);
    exit(1);
}

/* A change from the harness, for the bridge it names (any bridge's answer may carry it). */
static void cosim_apply(CosimBridgeState *from, const CosimChange *c)
{
    uint16_t index = le16_to_cpu(c->index);
    uint16_t line = le16_to_cpu(c->line);
    int64_t value = le64_to_cpu(c->value);
    CosimBridgeState *s = index < COSIM_MAX_BRIDGES ? cosim_bridges[index] : NULL;

    if (!s) {
        error_report("cosim-bridge '%s': a change for bridge %u, which does not exist", from->name,
                     index);
        return;
    }
    switch (le16_to_cpu(c->op)) {
    case OP_IRQ:
        if (line >= s->nirqs) {
            error_report("cosim-bridge '%s': IRQ change for line %u of %u", s->name, line, s->nirqs);
            return;
        }
        /* Both channels carry changes; only the newest per line counts. */
        if ((uint64_t)value <= s->irq_seq[line]) {
            return;
        }
        s->irq_seq[line] = value;
        qemu_set_irq(s->irqs[line], le16_to_cpu(c->level) != 0);
        break;
    case OP_DEADLINE:
        if (value < 0) {
            timer_del(s->deadline);
        } else {
            timer_mod(s->deadline, value);
        }
        break;
    case OP_WAKE:
        /* work scheduled outside an access: it enters at the guest's current time */
        timer_mod_anticipate(s->deadline, qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL));
        break;
    default:
        error_report("cosim-bridge '%s': unknown change op %u", from->name, le16_to_cpu(c->op));
    }
}

/* One request the vCPU (or the main loop) waits for: its answer's changes applied. */
static MemTxResult cosim_exchange(CosimBridgeState *s, uint8_t op, hwaddr addr, uint64_t *data,
                                  unsigned size)
{
    CosimRequest req = {
        .op = op,
        .size = size,
        .cpu = cpu_to_le16(current_cpu ? current_cpu->cpu_index : 0xffff),
        .seq = cpu_to_le32(++s->seq),
        .offset = cpu_to_le64(addr),
        .data = cpu_to_le64(op == OP_WRITE ? *data : 0),
        .vclock_ns = cpu_to_le64(qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL)),
    };
    CosimReply rep;
    ssize_t n;

    do {
        n = send(s->sync_fd, &req, sizeof(req), MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n != sizeof(req)) {
        cosim_lost(s, "MMIO request not sent");
    }
    do {
        n = recv(s->sync_fd, &rep, sizeof(rep), 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        cosim_lost(s, "no MMIO reply");
    }
    if (n < (ssize_t)offsetof(CosimReply, change) || le32_to_cpu(rep.seq) != s->seq ||
        le16_to_cpu(rep.nchanges) > COSIM_MAX_CHANGES ||
        n != (ssize_t)(offsetof(CosimReply, change) +
                       le16_to_cpu(rep.nchanges) * sizeof(CosimChange))) {
        error_report("cosim-bridge '%s': malformed MMIO reply (%zd bytes, seq %u, want %u)",
                     s->name, n, le32_to_cpu(rep.seq), s->seq);
        exit(1);
    }
    for (unsigned i = 0; i < le16_to_cpu(rep.nchanges); i++) {
        cosim_apply(s, &rep.change[i]);
    }
    if (op == OP_READ) {
        *data = le64_to_cpu(rep.data);
    }
    return rep.status == STATUS_OK ? MEMTX_OK : MEMTX_ERROR;
}

/*
 * Posted writes, of every bridge, in the guest's order: a ring in a file the harness maps. The
 * harness empties it before it serves any request; QEMU waits for that answer holding the BQL,
 * so nothing is added while it reads, and the send that precedes it orders QEMU's stores.
 */
static CosimRingHeader *cosim_ring;
static CosimPosted *cosim_ring_entries;
static QEMUTimer *cosim_flush_timer;

static bool cosim_map_ring(const char *path, Error **errp)
{
    int fd = open(path, O_RDWR);
    struct stat st;
    void *p;

    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size < (off_t)sizeof(CosimRingHeader)) {
        error_setg_errno(errp, errno, "cosim-bridge: posted-write ring '%s'", path);
        if (fd >= 0) {
            close(fd);
        }
        return false;
    }
    p = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        error_setg_errno(errp, errno, "cosim-bridge: cannot map the posted-write ring");
        return false;
    }
    cosim_ring = p;
    cosim_ring_entries = (CosimPosted *)(cosim_ring + 1);
    if (cosim_ring->entry_size != sizeof(CosimPosted) || !cosim_ring->capacity ||
        sizeof(CosimRingHeader) + (uint64_t)cosim_ring->capacity * sizeof(CosimPosted) >
        (uint64_t)st.st_size) {
        error_setg(errp, "cosim-bridge: the posted-write ring '%s' is malformed", path);
        return false;
    }
    return true;
}

/* The harness serves what the ring holds, answering on this bridge. */
static void cosim_drain_ring(CosimBridgeState *s)
{
    uint64_t unused = 0;

    cosim_exchange(s, OP_DRAIN, 0, &unused, 0);
}

/* Posted writes no access has carried on within COSIM_FLUSH_NS: drained from the main loop. */
static void cosim_flush_ring(void *unused)
{
    if (cosim_ring->head != cosim_ring->tail) {
        cosim_drain_ring(cosim_bridges[cosim_ring_entries[cosim_ring->tail % cosim_ring->capacity].index]);
    }
}

static bool cosim_is_posted(CosimBridgeState *s, hwaddr addr)
{
    for (unsigned i = 0; i < s->nposted; i++) {
        if (s->posted[i] == addr) {
            return true;
        }
    }
    return false;
}

static MemTxResult cosim_access(CosimBridgeState *s, uint8_t op, hwaddr addr, uint64_t *data,
                                unsigned size)
{
    if (op == OP_WRITE && cosim_ring && cosim_is_posted(s, addr)) {
        /* as an interconnect's write buffer takes it: the vCPU goes on; the harness serves the
         * ring before the next access it answers */
        if (cosim_ring->head - cosim_ring->tail == cosim_ring->capacity) {
            cosim_drain_ring(s);
        }
        cosim_ring_entries[cosim_ring->head % cosim_ring->capacity] = (CosimPosted) {
            .index = s->index, .size = size, .offset = addr, .data = *data,
            .vclock_ns = qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL),
        };
        cosim_ring->head++;
        if (!timer_pending(cosim_flush_timer)) {
            timer_mod(cosim_flush_timer, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) + COSIM_FLUSH_NS);
        }
        return MEMTX_OK;
    }
    return cosim_exchange(s, op, addr, data, size);
}

static MemTxResult cosim_read(void *opaque, hwaddr addr, uint64_t *data, unsigned size,
                              MemTxAttrs attrs)
{
    return cosim_access(opaque, OP_READ, addr, data, size);
}

static MemTxResult cosim_write(void *opaque, hwaddr addr, uint64_t data, unsigned size,
                               MemTxAttrs attrs)
{
    return cosim_access(opaque, OP_WRITE, addr, &data, size);
}

/* The model's deadline came: it does the work due, like an access (BQL held, IRQs in the reply). */
static void cosim_tick(void *opaque)
{
    uint64_t unused = 0;

    cosim_access(opaque, OP_TICK, 0, &unused, 0);
}

static const MemoryRegionOps cosim_ops = {
    .read_with_attrs = cosim_read,
    .write_with_attrs = cosim_write,
    .endianness = DEVICE_LITTLE_ENDIAN,
    .valid = { .min_access_size = 1, .max_access_size = 8 },
    .impl = { .min_access_size = 1, .max_access_size = 8 },
};

static void cosim_async_readable(void *opaque)
{
    CosimBridgeState *s = opaque;
    CosimChange c;
    ssize_t n;

    for (;;) {
        n = recv(s->async_fd, &c, sizeof(c), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        }
        if (n <= 0) {
            qemu_set_fd_handler(s->async_fd, NULL, NULL, NULL);
            cosim_lost(s, "async channel closed");
        }
        if (n != sizeof(c)) {
            error_report("cosim-bridge '%s': malformed async message (%zd bytes)", s->name, n);
            continue;
        }
        cosim_apply(s, &c);
    }
}

static int cosim_connect(CosimBridgeState *s, uint16_t channel, Error **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct timeval tv = { .tv_sec = COSIM_HANDSHAKE_TIMEOUT_S };
    struct timeval no_timeout = { 0 };
    CosimHello hello = {
        .magic = cpu_to_le32(COSIM_MAGIC),
        .version = cpu_to_le16(COSIM_PROTOCOL_VERSION),
        .channel = cpu_to_le16(channel),
        .pid = cpu_to_le32(getpid()),
    };
    CosimHelloAck ack;
    ssize_t n;
    int fd;

    if (strlen(s->socket_path) >= sizeof(sa.sun_path)) {
        error_setg(errp, "cosim-bridge '%s': socket path too long", s->name);
        return -1;
    }
    strcpy(sa.sun_path, s->socket_path);
    pstrcpy(hello.name, sizeof(hello.name), s->name);

    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "cosim-bridge '%s': socket", s->name);
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        error_setg_errno(errp, errno, "cosim-bridge '%s': cannot connect to %s", s->name,
                         s->socket_path);
        goto fail;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (send(fd, &hello, sizeof(hello), MSG_NOSIGNAL) != sizeof(hello)) {
        error_setg_errno(errp, errno, "cosim-bridge '%s': handshake not sent", s->name);
        goto fail;
    }
    n = recv(fd, &ack, sizeof(ack), 0);
    if (n != sizeof(ack) || le32_to_cpu(ack.magic) != COSIM_MAGIC) {
        error_setg(errp, "cosim-bridge '%s': no handshake answer from the harness", s->name);
        goto fail;
    }
    if (le16_to_cpu(ack.status) == HELLO_VERSION_MISMATCH) {
        error_setg(errp, "cosim-bridge '%s': protocol mismatch: this QEMU speaks v%d, the "
                   "harness v%d; rebuild QEMU with `cosim build`", s->name,
                   COSIM_PROTOCOL_VERSION, le16_to_cpu(ack.version));
        goto fail;
    }
    if (le16_to_cpu(ack.status) != HELLO_OK) {
        error_setg(errp, "cosim-bridge '%s': the harness refused the connection (status %u)",
                   s->name, le16_to_cpu(ack.status));
        goto fail;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &no_timeout, sizeof(no_timeout));
    return fd;

fail:
    close(fd);
    return -1;
}

static Object *cosim_find_gic(unsigned *nspis, Error **errp)
{
    static const char *const types[] = { "arm-gicv3-common", "arm_gic_common" };

    for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
        Object *gic = object_resolve_path_type("", types[i], NULL);
        if (gic) {
            uint64_t num_irq = object_property_get_uint(gic, "num-irq", errp);
            if (num_irq < 32) {
                return NULL;
            }
            *nspis = num_irq - 32;
            return gic;
        }
    }
    error_setg(errp, "cosim-bridge: the machine has no ARM GIC to wire interrupts to");
    return NULL;
}

static bool cosim_wire_irqs(CosimBridgeState *s, Error **errp)
{
    g_auto(GStrv) parts = NULL;
    unsigned nspis;
    Object *gic;

    if (!s->irq_list || !*s->irq_list) {
        return true;
    }
    gic = cosim_find_gic(&nspis, errp);
    if (!gic) {
        return false;
    }
    parts = g_strsplit(s->irq_list, ":", -1);
    for (char **p = parts; *p; p++) {
        uint64_t spi;
        if (s->nirqs == COSIM_MAX_IRQS) {
            error_setg(errp, "cosim-bridge '%s': more than %d IRQs", s->name, COSIM_MAX_IRQS);
            return false;
        }
        if (qemu_strtou64(*p, NULL, 0, &spi) < 0 || spi >= nspis) {
            error_setg(errp, "cosim-bridge '%s': IRQ '%s' is not a GIC SPI (0..%u)", s->name, *p,
                       nspis - 1);
            return false;
        }
        s->irqs[s->nirqs++] = qdev_get_gpio_in(DEVICE(gic), spi);
    }
    return true;
}

static bool cosim_parse_posted(CosimBridgeState *s, Error **errp)
{
    g_auto(GStrv) parts = NULL;

    if (!s->posted_list || !*s->posted_list) {
        return true;
    }
    parts = g_strsplit(s->posted_list, ":", -1);
    for (char **p = parts; *p; p++) {
        if (s->nposted == COSIM_MAX_POSTED_OFFSETS ||
            qemu_strtou64(*p, NULL, 0, &s->posted[s->nposted]) < 0 ||
            s->posted[s->nposted] >= s->size) {
            error_setg(errp, "cosim-bridge '%s': posted offset '%s' is not in the window or one "
                       "too many (at most %d)", s->name, *p, COSIM_MAX_POSTED_OFFSETS);
            return false;
        }
        s->nposted++;
    }
    return true;
}

static void cosim_realize(DeviceState *dev, Error **errp)
{
    CosimBridgeState *s = COSIM_BRIDGE(dev);

    if (!s->name || !s->socket_path || !s->size) {
        error_setg(errp, "cosim-bridge needs name, socket and size properties");
        return;
    }
    if (s->index >= COSIM_MAX_BRIDGES || cosim_bridges[s->index]) {
        error_setg(errp, "cosim-bridge '%s': index %u is out of range or taken", s->name, s->index);
        return;
    }
    if (!cosim_wire_irqs(s, errp) || !cosim_parse_posted(s, errp)) {
        return;
    }
    s->sync_fd = cosim_connect(s, CHANNEL_SYNC, errp);
    if (s->sync_fd < 0) {
        return;
    }
    s->async_fd = cosim_connect(s, CHANNEL_ASYNC, errp);
    if (s->async_fd < 0) {
        close(s->sync_fd);
        return;
    }
    s->deadline = timer_new_ns(QEMU_CLOCK_VIRTUAL, cosim_tick, s);
    if (s->nposted && !cosim_ring) {
        if (!s->ring_path || !cosim_map_ring(s->ring_path, errp)) {
            if (!s->ring_path) {
                error_setg(errp, "cosim-bridge '%s': posted registers need posted-ring", s->name);
            }
            return;
        }
        cosim_flush_timer = timer_new_ns(QEMU_CLOCK_REALTIME, cosim_flush_ring, NULL);
    }
    cosim_bridges[s->index] = s;
    qemu_socket_set_nonblock(s->async_fd);
    qemu_set_fd_handler(s->async_fd, cosim_async_readable, NULL, s);

    memory_region_init_io(&s->mmio, OBJECT(dev), &cosim_ops, s, s->name, s->size);
    /* Above virt's (empty) platform-bus container, which covers the same addresses. */
    memory_region_add_subregion_overlap(get_system_memory(), s->base, &s->mmio, 1);
}

static const Property cosim_properties[] = {
    DEFINE_PROP_STRING("name", CosimBridgeState, name),
    DEFINE_PROP_UINT32("index", CosimBridgeState, index, 0),
    DEFINE_PROP_STRING("socket", CosimBridgeState, socket_path),
    DEFINE_PROP_STRING("irqs", CosimBridgeState, irq_list),
    DEFINE_PROP_STRING("posted", CosimBridgeState, posted_list),
    DEFINE_PROP_STRING("posted-ring", CosimBridgeState, ring_path),
    DEFINE_PROP_UINT64("base", CosimBridgeState, base, 0),
    DEFINE_PROP_UINT64("size", CosimBridgeState, size, 0),
};

static void cosim_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);

    dc->realize = cosim_realize;
    dc->desc = "cosim bridge: an MMIO window and IRQs served by Python";
    device_class_set_props(dc, cosim_properties);
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
}

static const TypeInfo cosim_info = {
    .name = TYPE_COSIM_BRIDGE,
    .parent = TYPE_DEVICE,
    .instance_size = sizeof(CosimBridgeState),
    .class_init = cosim_class_init,
};

/*
 * cosim-sysbus-host: puts one of QEMU's own sysbus models (QEMU's C PL330, say) on a board that
 * does not let users add sysbus devices, for side-by-side comparison with a Python model.
 * Properties: model (QOM type), base, irqs (GIC SPIs for the model's sysbus IRQs, in order),
 * props ("name=value,..." set on the model), link-memory (set its "memory" link to system memory).
 */
#define TYPE_COSIM_SYSBUS_HOST "cosim-sysbus-host"
OBJECT_DECLARE_SIMPLE_TYPE(CosimSysbusHostState, COSIM_SYSBUS_HOST)

struct CosimSysbusHostState {
    DeviceState parent_obj;

    char *model;
    char *props;
    char *irq_list;
    char *posted_list;
    uint64_t base;
    bool link_memory;
};

static void cosim_host_realize(DeviceState *dev, Error **errp)
{
    CosimSysbusHostState *s = COSIM_SYSBUS_HOST(dev);
    ObjectClass *klass = s->model ? object_class_by_name(s->model) : NULL;
    g_auto(GStrv) props = NULL;
    g_auto(GStrv) irqs = NULL;
    SysBusDevice *sbd;
    DeviceState *inner;
    unsigned nspis, n = 0;
    Object *gic;

    if (!klass || !object_class_dynamic_cast(klass, TYPE_SYS_BUS_DEVICE)) {
        error_setg(errp, "cosim-sysbus-host: '%s' is not a sysbus device type",
                   s->model ? s->model : "");
        return;
    }
    inner = qdev_new(s->model);
    props = g_strsplit(s->props ? s->props : "", ",", -1);
    for (char **p = props; *p && **p; p++) {
        char *eq = strchr(*p, '=');
        if (!eq) {
            error_setg(errp, "cosim-sysbus-host: property '%s' is not name=value", *p);
            goto fail;
        }
        *eq = '\0';
        if (!object_property_parse(OBJECT(inner), *p, eq + 1, errp)) {
            goto fail;
        }
    }
    if (s->link_memory &&
        !object_property_set_link(OBJECT(inner), "memory", OBJECT(get_system_memory()), errp)) {
        goto fail;
    }
    sbd = SYS_BUS_DEVICE(inner);
    if (!sysbus_realize_and_unref(sbd, errp)) {
        return;
    }
    memory_region_add_subregion_overlap(get_system_memory(), s->base,
                                        sysbus_mmio_get_region(sbd, 0), 1);
    gic = cosim_find_gic(&nspis, errp);
    if (!gic) {
        return;
    }
    irqs = g_strsplit(s->irq_list ? s->irq_list : "", ":", -1);
    for (char **p = irqs; *p && **p; p++, n++) {
        uint64_t spi;
        if (qemu_strtou64(*p, NULL, 0, &spi) < 0 || spi >= nspis) {
            error_setg(errp, "cosim-sysbus-host: IRQ '%s' is not a GIC SPI", *p);
            return;
        }
        sysbus_connect_irq(sbd, n, qdev_get_gpio_in(DEVICE(gic), spi));
    }
    return;

fail:
    object_unref(OBJECT(inner));
}

static const Property cosim_host_properties[] = {
    DEFINE_PROP_STRING("model", CosimSysbusHostState, model),
    DEFINE_PROP_STRING("props", CosimSysbusHostState, props),
    DEFINE_PROP_STRING("irqs", CosimSysbusHostState, irq_list),
    DEFINE_PROP_UINT64("base", CosimSysbusHostState, base, 0),
    DEFINE_PROP_BOOL("link-memory", CosimSysbusHostState, link_memory, false),
};

static void cosim_host_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);

    dc->realize = cosim_host_realize;
    dc->desc = "cosim: one of QEMU's own sysbus models, mapped and wired on any board";
    device_class_set_props(dc, cosim_host_properties);
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
}

static const TypeInfo cosim_host_info = {
    .name = TYPE_COSIM_SYSBUS_HOST,
    .parent = TYPE_DEVICE,
    .instance_size = sizeof(CosimSysbusHostState),
    .class_init = cosim_host_class_init,
};

/*
 * cosim-clock: maps the harness's control file; its first byte, when non-zero, holds an idle
 * guest's time (the harness sets it between guest commands).  Property: control (the file).
 */
#define TYPE_COSIM_CLOCK "cosim-clock"
OBJECT_DECLARE_SIMPLE_TYPE(CosimClockState, COSIM_CLOCK)

struct CosimClockState {
    DeviceState parent_obj;

    char *control;
};

static void cosim_clock_realize(DeviceState *dev, Error **errp)
{
    CosimClockState *s = COSIM_CLOCK(dev);
    void *map;
    int fd;

    if (!s->control) {
        error_setg(errp, "cosim-clock needs its control property (a file)");
        return;
    }
    fd = open(s->control, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error_setg_errno(errp, errno, "cosim-clock: cannot open %s", s->control);
        return;
    }
    map = mmap(NULL, qemu_real_host_page_size(), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        error_setg_errno(errp, errno, "cosim-clock: cannot map %s", s->control);
        return;
    }
    cosim_idle_hold = map;
}

static const Property cosim_clock_properties[] = {
    DEFINE_PROP_STRING("control", CosimClockState, control),
};

static void cosim_clock_class_init(ObjectClass *klass, void *data)
{
    DeviceClass *dc = DEVICE_CLASS(klass);

    dc->realize = cosim_clock_realize;
    dc->desc = "cosim: the harness's hold on an idle guest's time";
    device_class_set_props(dc, cosim_clock_properties);
    set_bit(DEVICE_CATEGORY_MISC, dc->categories);
}

static const TypeInfo cosim_clock_info = {
    .name = TYPE_COSIM_CLOCK,
    .parent = TYPE_DEVICE,
    .instance_size = sizeof(CosimClockState),
    .class_init = cosim_clock_class_init,
};

static void cosim_register_types(void)
{
    type_register_static(&cosim_info);
    type_register_static(&cosim_host_info);
    type_register_static(&cosim_clock_info);
}

type_init(cosim_register_types)
