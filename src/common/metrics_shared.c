/* The workers' shared metrics segment and the merge of expositions
 * (include/cronium/metrics_shared.h says why it is shaped this way). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "cronium/map.h"
#include "cronium/metrics_shared.h"

#define SLOT_BYTES (512u * 1024u)
#define PUBLISH_MS 1000
#define STALE_MS 3500               /* a slot not published for this long is not alive */
#define READ_TRIES 64

typedef enum { SLOT_EMPTY, SLOT_STARTING, SLOT_READY, SLOT_STOPPING } slot_state;

/* One slot: this header, then the text. seq is the sequence lock (odd while
 * the worker writes); state and pid are written by the supervisor (spawn,
 * exit) and the worker (ready, stopping). */
typedef struct slot_hdr {
    uint32_t seq;
    uint32_t state;
    int32_t pid;
    uint32_t len;
    uint64_t beat_ms;               /* CLOCK_MONOTONIC of the last publish: system-wide */
    uint32_t ever_ready;
    uint32_t truncated;
    char pad[32];
} slot_hdr;

#define SLOT_DATA (SLOT_BYTES - sizeof(slot_hdr))

struct crt_mshared {
    unsigned char *base;
    size_t size;
    unsigned n;
    int self;
    crt_metrics *m;
    const bool *stopping;
    uv_timer_t timer;
    bool timer_open;
    crt_buf local;                  /* this worker's own rendering */
    crt_buf pub;                    /* carry + local, what goes into the slot */
    crt_buf carry;                  /* counters a previous worker of this slot left */
    crt_buf snap;                   /* slot copies while merging */
};

static slot_hdr *slot(const crt_mshared *sh, unsigned i) { return (slot_hdr *)(sh->base + (size_t)i * SLOT_BYTES); }
static char *slot_data(const crt_mshared *sh, unsigned i) { return (char *)(slot(sh, i) + 1); }

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int crt_mshared_create(unsigned n)
{
    if (n == 0 || n > CRT_WORKERS_MAX)
        return -EINVAL;
    /* memfd: no name in /dev/shm to clean up after a crash; the pages are
     * only allocated when a worker writes them. */
    int fd = memfd_create("cronium-runtime-workers", MFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (ftruncate(fd, (off_t)n * SLOT_BYTES) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

crt_mshared *crt_mshared_map(int fd, unsigned n, int self)
{
    struct stat st;
    if (n == 0 || n > CRT_WORKERS_MAX || self >= (int)n || fstat(fd, &st) != 0 ||
        (size_t)st.st_size != (size_t)n * SLOT_BYTES)
        return NULL;
    crt_mshared *sh = calloc(1, sizeof *sh);
    if (!sh)
        return NULL;
    sh->size = (size_t)n * SLOT_BYTES;
    void *p = mmap(NULL, sh->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        free(sh);
        return NULL;
    }
    sh->base = p;
    sh->n = n;
    sh->self = self;
    crt_buf_init(&sh->local);
    crt_buf_init(&sh->pub);
    crt_buf_init(&sh->carry);
    crt_buf_init(&sh->snap);
    return sh;
}

void crt_mshared_free(crt_mshared *sh)
{
    if (!sh)
        return;
    munmap(sh->base, sh->size);
    crt_buf_fini(&sh->local);
    crt_buf_fini(&sh->pub);
    crt_buf_fini(&sh->carry);
    crt_buf_fini(&sh->snap);
    free(sh);
}

/* ---- slots ----------------------------------------------------------------------------------- */

void crt_mshared_slot_spawned(crt_mshared *sh, unsigned i, int pid)
{
    slot_hdr *h = slot(sh, i);
    __atomic_store_n(&h->pid, pid, __ATOMIC_RELAXED);
    __atomic_store_n(&h->ever_ready, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&h->state, SLOT_STARTING, __ATOMIC_RELEASE);
}

bool crt_mshared_slot_exited(crt_mshared *sh, unsigned i)
{
    slot_hdr *h = slot(sh, i);
    __atomic_store_n(&h->state, SLOT_EMPTY, __ATOMIC_RELEASE);
    __atomic_store_n(&h->pid, 0, __ATOMIC_RELAXED);
    /* Killed in the middle of a publish: the lock stays odd and readers
     * would skip the slot forever; its text is unusable, drop it. */
    uint32_t s = __atomic_load_n(&h->seq, __ATOMIC_ACQUIRE);
    if (s & 1u) {
        __atomic_store_n(&h->len, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&h->seq, s + 1u, __ATOMIC_RELEASE);
    }
    return __atomic_load_n(&h->ever_ready, __ATOMIC_ACQUIRE) != 0;
}

/* A consistent copy of slot i's text into out (appended); false if the
 * writer kept it busy (it then shows up at the next scrape). */
static bool slot_read(crt_mshared *sh, unsigned i, crt_buf *out)
{
    slot_hdr *h = slot(sh, i);
    size_t start = out->len;
    for (int t = 0; t < READ_TRIES; t++) {
        uint32_t s1 = __atomic_load_n(&h->seq, __ATOMIC_ACQUIRE);
        if (s1 & 1u)
            continue;
        uint32_t len = __atomic_load_n(&h->len, __ATOMIC_RELAXED);
        if (len > SLOT_DATA)
            len = 0;
        out->len = start;
        if (crt_buf_append(out, slot_data(sh, i), len) != 0)
            return false;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&h->seq, __ATOMIC_RELAXED) == s1)
            return true;
    }
    out->len = start;
    return false;
}

static void slot_write(crt_mshared *sh, const char *p, size_t len)
{
    slot_hdr *h = slot(sh, (unsigned)sh->self);
    uint32_t trunc = 0;
    if (len > SLOT_DATA) {          /* cut at a line end: a partial line would not parse */
        size_t cut = SLOT_DATA;
        while (cut > 0 && p[cut - 1] != '\n')
            cut--;
        len = cut;
        trunc = 1;
    }
    uint32_t s = __atomic_load_n(&h->seq, __ATOMIC_RELAXED);
    if (s & 1u)
        s++;                         /* left odd by a killed predecessor */
    __atomic_store_n(&h->seq, s + 1u, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(slot_data(sh, (unsigned)sh->self), p, len);
    __atomic_store_n(&h->len, (uint32_t)len, __ATOMIC_RELAXED);
    __atomic_store_n(&h->truncated, trunc, __ATOMIC_RELAXED);
    __atomic_store_n(&h->beat_ms, mono_ms(), __ATOMIC_RELAXED);
    __atomic_store_n(&h->seq, s + 2u, __ATOMIC_RELEASE);
}

/* ---- worker side ----------------------------------------------------------------------------- */

void crt_mshared_publish(crt_mshared *sh)
{
    if (!sh || sh->self < 0 || !sh->m)
        return;
    slot_hdr *h = slot(sh, (unsigned)sh->self);
    if (sh->stopping && *sh->stopping) {
        /* Draining: not ready any more, and no rendering, since the stores
         * behind some gauges are being released. The last text stays. */
        __atomic_store_n(&h->state, SLOT_STOPPING, __ATOMIC_RELEASE);
        if (sh->timer_open)
            uv_timer_stop(&sh->timer);
        return;
    }
    crt_buf_reset(&sh->local);
    crt_metrics_render_local(sh->m, &sh->local);
    const crt_buf *text = &sh->local;
    if (sh->carry.len) {
        crt_span parts[2] = {{sh->carry.data, sh->carry.len}, {sh->local.data, sh->local.len}};
        crt_buf_reset(&sh->pub);
        crt_metrics_merge(parts, 2, false, &sh->pub);
        text = &sh->pub;
    }
    slot_write(sh, text->data ? text->data : "", text->len);
}

static void on_publish_timer(uv_timer_t *t) { crt_mshared_publish(t->data); }

int crt_mshared_start(crt_mshared *sh, uv_loop_t *loop, crt_metrics *m, const bool *stopping)
{
    sh->m = m;
    sh->stopping = stopping;
    /* A previous worker of this slot died: keep its counters and histograms
     * under ours, so the sums over workers never go backwards. */
    crt_buf prev;
    crt_buf_init(&prev);
    if (slot_read(sh, (unsigned)sh->self, &prev) && prev.len) {
        crt_span one = {prev.data, prev.len};
        crt_metrics_merge(&one, 1, true, &sh->carry);
    }
    crt_buf_fini(&prev);
    int rc = uv_timer_init(loop, &sh->timer);
    if (rc)
        return rc;
    sh->timer.data = sh;
    sh->timer_open = true;
    uv_unref((uv_handle_t *)&sh->timer);   /* never what keeps the loop running */
    crt_metrics_set_shared(m, sh);
    crt_mshared_publish(sh);
    slot_hdr *h = slot(sh, (unsigned)sh->self);
    __atomic_store_n(&h->pid, (int32_t)getpid(), __ATOMIC_RELAXED);
    __atomic_store_n(&h->ever_ready, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&h->state, SLOT_READY, __ATOMIC_RELEASE);
    return uv_timer_start(&sh->timer, on_publish_timer, PUBLISH_MS, PUBLISH_MS);
}

void crt_mshared_stop(crt_mshared *sh)
{
    if (!sh || !sh->timer_open)
        return;
    __atomic_store_n(&slot(sh, (unsigned)sh->self)->state, SLOT_STOPPING, __ATOMIC_RELEASE);
    uv_close((uv_handle_t *)&sh->timer, NULL);
    sh->timer_open = false;
    if (sh->m)
        crt_metrics_set_shared(sh->m, NULL);
}

static bool slot_up(const crt_mshared *sh, unsigned i, uint64_t now)
{
    slot_hdr *h = slot(sh, i);
    if (__atomic_load_n(&h->state, __ATOMIC_ACQUIRE) != SLOT_READY)
        return false;
    uint64_t beat = __atomic_load_n(&h->beat_ms, __ATOMIC_RELAXED);
    return now < beat + STALE_MS;
}

unsigned crt_mshared_ready(crt_mshared *sh, unsigned *total)
{
    *total = sh->n;
    if (sh->self >= 0)              /* this worker is answering: its loop turns */
        __atomic_store_n(&slot(sh, (unsigned)sh->self)->beat_ms, mono_ms(), __ATOMIC_RELAXED);
    uint64_t now = mono_ms();
    unsigned up = 0;
    for (unsigned i = 0; i < sh->n; i++)
        up += slot_up(sh, i, now);
    return up;
}

void crt_mshared_render(crt_mshared *sh, crt_buf *out)
{
    crt_mshared_publish(sh);
    crt_buf_reset(&sh->snap);
    size_t off[CRT_WORKERS_MAX + 1];
    for (unsigned i = 0; i < sh->n; i++) {
        off[i] = sh->snap.len;
        if (!slot_read(sh, i, &sh->snap))
            sh->snap.len = off[i];
    }
    off[sh->n] = sh->snap.len;
    crt_span texts[CRT_WORKERS_MAX];
    for (unsigned i = 0; i < sh->n; i++)
        texts[i] = (crt_span){sh->snap.data ? sh->snap.data + off[i] : "", off[i + 1] - off[i]};
    crt_metrics_merge(texts, sh->n, false, out);
    uint64_t now = mono_ms();
    crt_buf_printf(out, "# HELP cronium_runtime_workers Worker processes configured (server.workers).\n"
                        "# TYPE cronium_runtime_workers gauge\ncronium_runtime_workers %u\n"
                        "# HELP cronium_runtime_worker_up 1 when the worker is alive, listening and not stopping.\n"
                        "# TYPE cronium_runtime_worker_up gauge\n",
                   sh->n);
    unsigned truncated = 0;
    for (unsigned i = 0; i < sh->n; i++) {
        crt_buf_printf(out, "cronium_runtime_worker_up{worker=\"%u\"} %d\n", i, slot_up(sh, i, now) ? 1 : 0);
        truncated += __atomic_load_n(&slot(sh, i)->truncated, __ATOMIC_RELAXED) != 0;
    }
    if (truncated)
        crt_buf_printf(out, "# %u worker(s) had more metrics than a slot holds; the rest is not shown\n",
                       truncated);
}

/* ---- the merge ------------------------------------------------------------------------------- */

typedef enum { MODE_SUM, MODE_PER_WORKER, MODE_MAX } merge_mode;
typedef enum { K_UNTYPED, K_COUNTER, K_GAUGE, K_HISTOGRAM, K_OTHER } fam_kind;

/* Gauges whose sum means nothing: one series per worker instead (an alert
 * on valkey_up == 0 then fires when any worker lost Valkey). */
static const char *const per_worker[] = {"cronium_runtime_valkey_up", "process_start_time_seconds"};
/* The same in every worker. */
static const char *const keep_max[] = {"cronium_runtime_build_info"};

typedef struct sample {
    char *key;                      /* name{labels} as rendered, worker label included */
    double v;
} sample;

typedef struct family {
    char *name;
    char *help;                     /* the whole "# HELP" line, or NULL */
    fam_kind kind;
    char *type;                     /* as written after "# TYPE name " */
    merge_mode mode;
    sample *s;
    size_t ns, caps;
} family;

typedef struct merger {
    family *f;
    size_t nf, capf;
    crt_map *fams;                  /* name -> index + 1 */
    crt_map *samples;               /* key -> (family << 20 | sample) + 1 */
    bool oom;
} merger;

static bool in_list(const char *const *l, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(l[i]) == len && memcmp(l[i], name, len) == 0)
            return true;
    return false;
}

static family *fam_get(merger *mg, const char *name, size_t len)
{
    void **slotp = crt_map_slot(mg->fams, name, len, true);
    if (!slotp) {
        mg->oom = true;
        return NULL;
    }
    if (*slotp)
        return &mg->f[(uintptr_t)*slotp - 1];
    if (mg->nf == mg->capf) {
        size_t cap = mg->capf ? mg->capf * 2 : 32;
        family *nf = realloc(mg->f, cap * sizeof *nf);
        if (!nf) {
            crt_map_del(mg->fams, name, len);
            mg->oom = true;
            return NULL;
        }
        mg->f = nf;
        mg->capf = cap;
    }
    family *f = &mg->f[mg->nf];
    memset(f, 0, sizeof *f);
    f->name = strndup(name, len);
    if (!f->name) {
        crt_map_del(mg->fams, name, len);
        mg->oom = true;
        return NULL;
    }
    f->mode = in_list(per_worker, CRT_ARRAY_LEN(per_worker), name, len) ? MODE_PER_WORKER
              : in_list(keep_max, CRT_ARRAY_LEN(keep_max), name, len)   ? MODE_MAX
                                                                         : MODE_SUM;
    *slotp = (void *)(uintptr_t)(++mg->nf);
    return f;
}

static void add_sample(merger *mg, family *f, const char *key, size_t klen, unsigned worker, double v)
{
    char tmp[1024];
    if (f->mode == MODE_PER_WORKER) {
        /* name{a="b"} -> name{worker="i",a="b"}; name -> name{worker="i"} */
        const char *brace = memchr(key, '{', klen);
        int n = brace ? snprintf(tmp, sizeof tmp, "%.*s{worker=\"%u\",%.*s", (int)(brace - key), key, worker,
                                 (int)(klen - (size_t)(brace - key) - 1), brace + 1)
                      : snprintf(tmp, sizeof tmp, "%.*s{worker=\"%u\"}", (int)klen, key, worker);
        if (n < 0 || (size_t)n >= sizeof tmp)
            return;
        key = tmp;
        klen = (size_t)n;
    }
    void **slotp = crt_map_slot(mg->samples, key, klen, true);
    if (!slotp) {
        mg->oom = true;
        return;
    }
    if (*slotp) {
        uintptr_t ref = (uintptr_t)*slotp - 1;
        sample *s = &mg->f[ref >> 20].s[ref & 0xfffff];
        if (f->mode == MODE_MAX)
            s->v = v > s->v ? v : s->v;
        else
            s->v += v;
        return;
    }
    if (f->ns == f->caps) {
        size_t cap = f->caps ? f->caps * 2 : 8;
        sample *ns = cap < 0x100000 ? realloc(f->s, cap * sizeof *ns) : NULL;
        if (!ns) {
            crt_map_del(mg->samples, key, klen);
            mg->oom = true;
            return;
        }
        f->s = ns;
        f->caps = cap;
    }
    sample *s = &f->s[f->ns];
    s->key = strndup(key, klen);
    if (!s->key) {
        crt_map_del(mg->samples, key, klen);
        mg->oom = true;
        return;
    }
    s->v = v;
    *slotp = (void *)(((uintptr_t)(f - mg->f) << 20 | f->ns) + 1);
    f->ns++;
}

static fam_kind kind_of(const char *t, size_t n)
{
    if (n == 7 && !memcmp(t, "counter", 7)) return K_COUNTER;
    if (n == 5 && !memcmp(t, "gauge", 5)) return K_GAUGE;
    if (n == 9 && !memcmp(t, "histogram", 9)) return K_HISTOGRAM;
    if (n == 7 && !memcmp(t, "untyped", 7)) return K_UNTYPED;
    return K_OTHER;
}

/* Does a sample's metric name belong to family f (histogram suffixes)? */
static bool belongs(const family *f, const char *name, size_t len)
{
    size_t fl = strlen(f->name);
    if (len == fl)
        return memcmp(name, f->name, fl) == 0;
    if (f->kind != K_HISTOGRAM || len < fl || memcmp(name, f->name, fl) != 0)
        return false;
    const char *suf = name + fl;
    size_t sl = len - fl;
    return (sl == 7 && !memcmp(suf, "_bucket", 7)) || (sl == 4 && !memcmp(suf, "_sum", 4)) ||
           (sl == 6 && !memcmp(suf, "_count", 6));
}

static void merge_text(merger *mg, crt_span text, unsigned worker, bool carry_only)
{
    family *cur = NULL;
    const char *p = text.p, *end = text.p + text.len;
    while (p < end && !mg->oom) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t len = (size_t)(le - p);
        if (len > 7 && (!memcmp(p, "# HELP ", 7) || !memcmp(p, "# TYPE ", 7))) {
            const char *nm = p + 7;
            const char *sp = memchr(nm, ' ', (size_t)(le - nm));
            size_t nlen = sp ? (size_t)(sp - nm) : (size_t)(le - nm);
            cur = fam_get(mg, nm, nlen);
            if (cur && p[2] == 'H' && !cur->help)
                cur->help = strndup(p, len);
            else if (cur && p[2] == 'T' && !cur->type && sp) {
                cur->type = strndup(sp + 1, (size_t)(le - sp - 1));
                cur->kind = kind_of(sp + 1, (size_t)(le - sp - 1));
            }
        } else if (len && *p != '#') {
            const char *sp = NULL;      /* the value follows the last blank outside labels */
            for (const char *q = le; q > p; q--)
                if (q[-1] == ' ') {
                    sp = q - 1;
                    break;
                }
            size_t nlen = strcspn(p, "{ ");
            if (sp && sp > p && nlen <= len) {
                char num[64];
                size_t vl = (size_t)(le - sp - 1);
                if (vl && vl < sizeof num) {
                    memcpy(num, sp + 1, vl);
                    num[vl] = '\0';
                    char *e;
                    double v = strtod(num, &e);
                    if (*e == '\0') {
                        family *f = cur && belongs(cur, p, nlen) ? cur : fam_get(mg, p, nlen);
                        if (f && (!carry_only || f->kind == K_COUNTER || f->kind == K_HISTOGRAM))
                            add_sample(mg, f, p, (size_t)(sp - p), worker, v);
                    }
                }
            }
        }
        p = nl ? nl + 1 : end;
    }
}

static void put_value(crt_buf *out, double v)
{
    if (isfinite(v) && v == floor(v) && fabs(v) < 9007199254740992.0)
        crt_buf_printf(out, "%.0f\n", v);
    else
        crt_buf_printf(out, "%.15g\n", v);
}

void crt_metrics_merge(const crt_span *texts, size_t n, bool carry_only, crt_buf *out)
{
    merger mg = {0};
    mg.fams = crt_map_new();
    mg.samples = crt_map_new();
    if (!mg.fams || !mg.samples)
        mg.oom = true;
    for (size_t i = 0; i < n && !mg.oom; i++)
        merge_text(&mg, texts[i], (unsigned)i, carry_only);
    for (size_t i = 0; i < mg.nf; i++) {
        family *f = &mg.f[i];
        if (f->ns || !carry_only) {     /* a carry keeps no family it has no sample of */
            if (f->help)
                crt_buf_printf(out, "%s\n", f->help);
            if (f->type)
                crt_buf_printf(out, "# TYPE %s %s\n", f->name, f->type);
        }
        for (size_t j = 0; j < f->ns; j++) {
            crt_buf_puts(out, f->s[j].key);
            crt_buf_putc(out, ' ');
            put_value(out, f->s[j].v);
            free(f->s[j].key);
        }
        free(f->s);
        free(f->name);
        free(f->help);
        free(f->type);
    }
    free(mg.f);
    crt_map_free(mg.fams, NULL);
    crt_map_free(mg.samples, NULL);
}
