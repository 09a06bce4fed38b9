/*
 * hmap.h - a string-keyed hash map of borrowed keys to pointers.
 *
 * Open addressing with linear probing and backward-shift deletion, so there
 * are no tombstones and lookups stay short. Keys are not copied: the caller
 * keeps each key alive while its entry is in the map (the transaction owns
 * its gid). Not thread-safe; dtxd uses it from the loop thread only.
 */
#ifndef DTX_HMAP_H
#define DTX_HMAP_H

#include <stddef.h>

struct hmap_slot {
    const char *key; /* NULL = empty */
    size_t hash;
    void *val;
};

struct hmap {
    struct hmap_slot *slots;
    size_t cap; /* power of two */
    size_t len;
};

void hmap_init(struct hmap *m);
void hmap_close(struct hmap *m);
void *hmap_get(const struct hmap *m, const char *key);
/* Insert or replace. Returns the previous value or NULL. */
void *hmap_put(struct hmap *m, const char *key, void *val);
/* Remove. Returns the removed value or NULL. */
void *hmap_del(struct hmap *m, const char *key);

#endif
