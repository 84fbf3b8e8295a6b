/* Method + path-pattern router. A handful of routes, matched segment by
 * segment; {name} segments capture one percent-decoded segment. */
#include <stdlib.h>
#include <string.h>
#include "cronium/http.h"

#define MAX_ROUTES 32
#define MAX_SEGS 8

typedef struct route {
    char method[8];
    char *pattern;
    crt_span segs[MAX_SEGS];        /* into pattern; "{...}" marks a capture */
    size_t nsegs;
    crt_handler_fn fn;
    void *ctx;
} route;

struct crt_router {
    route routes[MAX_ROUTES];
    size_t n;
};

crt_router *crt_router_new(void) { return calloc(1, sizeof(crt_router)); }

void crt_router_free(crt_router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        free(r->routes[i].pattern);
    free(r);
}

static size_t split(const char *p, size_t n, crt_span *segs, size_t max)
{
    size_t k = 0, i = 0;
    if (n && p[0] == '/')
        i = 1;
    size_t start = i;
    for (; i <= n; i++) {
        if (i == n || p[i] == '/') {
            if (k == max)
                return max + 1;
            segs[k++] = (crt_span){p + start, i - start};
            start = i + 1;
        }
    }
    return k;
}

int crt_router_add(crt_router *r, const char *method, const char *pattern, crt_handler_fn fn, void *ctx)
{
    if (r->n == MAX_ROUTES || strlen(method) >= sizeof r->routes[0].method)
        return CRT_ELIMIT;
    route *rt = &r->routes[r->n];
    rt->pattern = strdup(pattern);
    if (!rt->pattern)
        return CRT_ENOMEM;
    strcpy(rt->method, method);
    rt->nsegs = split(rt->pattern, strlen(rt->pattern), rt->segs, MAX_SEGS);
    if (rt->nsegs > MAX_SEGS) {
        free(rt->pattern);
        return CRT_EINVAL;
    }
    rt->fn = fn;
    rt->ctx = ctx;
    r->n++;
    return 0;
}

size_t crt_router_count(const crt_router *r) { return r->n; }
const char *crt_router_name(const crt_router *r, size_t id) { return id < r->n ? r->routes[id].pattern : "unmatched"; }

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

void crt_percent_decode(const char *s, size_t n, crt_buf *out, bool plus_is_space)
{
    if (crt_buf_reserve(out, n))
        return;
    char *o = out->data + out->len;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 && (lo = hexval(s[i + 2])) >= 0) {
            *o++ = (char)(hi << 4 | lo);
            i += 2;
        } else if (plus_is_space && s[i] == '+') {
            *o++ = ' ';
        } else {
            *o++ = s[i];
        }
    }
    out->len = (size_t)(o - out->data);
}

static bool method_is(const crt_req *req, const char *m)
{
    return req->method_name.len == strlen(m) && memcmp(req->method_name.p, m, req->method_name.len) == 0;
}

static bool seg_match(const route *rt, const crt_span *segs, size_t nsegs)
{
    if (rt->nsegs != nsegs)
        return false;
    for (size_t i = 0; i < nsegs; i++) {
        crt_span p = rt->segs[i];
        if (p.len && p.p[0] == '{')
            continue;
        if (p.len != segs[i].len || memcmp(p.p, segs[i].p, p.len) != 0)
            return false;
    }
    return true;
}

crt_route_result crt_router_match(const crt_router *r, crt_req *req, crt_handler_fn *fn, void **ctx,
                                  char *allow, size_t allow_cap)
{
    crt_span segs[MAX_SEGS + 1];
    size_t nsegs = split(req->path.p, req->path.len, segs, MAX_SEGS);
    req->route_id = -1;
    req->route_name = "unmatched";
    if (nsegs > MAX_SEGS)
        return CRT_ROUTE_NOT_FOUND;
    /* An empty capture (e.g. /variables/) matches: the handler says what is wrong. */
    bool path_known = false;
    size_t alen = 0;
    if (allow_cap)
        allow[0] = '\0';
    for (size_t i = 0; i < r->n; i++) {
        const route *rt = &r->routes[i];
        if (!seg_match(rt, segs, nsegs))
            continue;
        if (!path_known) {
            req->route_name = rt->pattern;
            req->route_id = (int)i;
        }
        path_known = true;
        if (method_is(req, rt->method) || (method_is(req, "HEAD") && strcmp(rt->method, "GET") == 0)) {
            req->route_id = (int)i;
            req->route_name = rt->pattern;
            /* Decode captures into scratch; record offsets, then pointers,
             * because scratch may move while it grows. */
            size_t offs[CRT_HTTP_MAX_PARAMS], lens[CRT_HTTP_MAX_PARAMS];
            req->nparams = 0;
            for (size_t k = 0; k < nsegs && req->nparams < CRT_HTTP_MAX_PARAMS; k++) {
                if (!(rt->segs[k].len && rt->segs[k].p[0] == '{'))
                    continue;
                offs[req->nparams] = req->scratch.len;
                crt_percent_decode(segs[k].p, segs[k].len, &req->scratch, false);
                lens[req->nparams] = req->scratch.len - offs[req->nparams];
                req->nparams++;
            }
            for (size_t k = 0; k < req->nparams; k++)
                req->params[k] = (crt_span){req->scratch.data + offs[k], lens[k]};
            *fn = rt->fn;
            *ctx = rt->ctx;
            return CRT_ROUTE_FOUND;
        }
        /* Collect Allow; GET implies HEAD (answered by the GET handler). */
        const char *ms[2] = {rt->method, strcmp(rt->method, "GET") == 0 ? "HEAD" : NULL};
        for (int m = 0; m < 2 && ms[m]; m++) {
            size_t ml = strlen(ms[m]);
            if (alen && strstr(allow, ms[m]))
                continue;
            if (alen + ml + 3 < allow_cap) {
                if (alen) {
                    memcpy(allow + alen, ", ", 2);
                    alen += 2;
                }
                memcpy(allow + alen, ms[m], ml + 1);
                alen += ml;
            }
        }
    }
    return path_known ? CRT_ROUTE_BAD_METHOD : CRT_ROUTE_NOT_FOUND;
}
