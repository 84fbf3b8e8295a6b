/* A string-keyed hash map (chained, power-of-two table, grows at load 1).
 * Keys are copied; values are opaque pointers owned by the caller. */
#ifndef CRONIUM_MAP_H
#define CRONIUM_MAP_H

#include "cronium/common.h"

typedef struct crt_map crt_map;

crt_map *crt_map_new(void);
/* Frees the map; free_val (may be NULL) is called on every value. */
void crt_map_free(crt_map *m, void (*free_val)(void *));
void *crt_map_get(const crt_map *m, const char *k, size_t n);
/* Returns the value slot for k, creating it (NULL value) if create. NULL on
 * allocation failure or (without create) absence. */
void **crt_map_slot(crt_map *m, const char *k, size_t n, bool create);
/* Removes k; returns its value (NULL if absent). */
void *crt_map_del(crt_map *m, const char *k, size_t n);
size_t crt_map_size(const crt_map *m);
/* FNV-1a: crt_hash of one string; crt_hash_fold goes on from h (start at
 * CRT_HASH_SEED) so a key made of several fields needs no concatenation. */
#define CRT_HASH_SEED 1469598103934665603ULL
uint64_t crt_hash(const void *p, size_t n);
uint64_t crt_hash_fold(uint64_t h, const void *p, size_t n);

#endif
