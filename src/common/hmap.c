/* hmap.c - open-addressing string map (see hmap.h). */
#include "common/hmap.h"

#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"

static size_t hash_str(const char *s)
{
    /* FNV-1a, 64-bit */
    size_t h = (size_t)1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= (size_t)1099511628211ULL;
    }
    return h;
}

void hmap_init(struct hmap *m)
{
    m->slots = NULL;
    m->cap = 0;
    m->len = 0;
}

void hmap_close(struct hmap *m)
{
    free(m->slots);
    hmap_init(m);
}

static struct hmap_slot *find(const struct hmap *m, const char *key, size_t h)
{
    if (m->cap == 0)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        struct hmap_slot *s = &m->slots[i];
        if (s->key == NULL)
            return NULL;
        if (s->hash == h && strcmp(s->key, key) == 0)
            return s;
    }
}

static void grow(struct hmap *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 64;
    struct hmap_slot *old = m->slots;
    size_t ocap = m->cap;
    m->slots = xcalloc(ncap, sizeof *m->slots);
    m->cap = ncap;
    for (size_t i = 0; i < ocap; i++) {
        if (old[i].key == NULL)
            continue;
        size_t j = old[i].hash & (ncap - 1);
        while (m->slots[j].key != NULL)
            j = (j + 1) & (ncap - 1);
        m->slots[j] = old[i];
    }
    free(old);
}

void *hmap_get(const struct hmap *m, const char *key)
{
    struct hmap_slot *s = find(m, key, hash_str(key));
    return s ? s->val : NULL;
}

void *hmap_put(struct hmap *m, const char *key, void *val)
{
    size_t h = hash_str(key);
    struct hmap_slot *s = find(m, key, h);
    if (s) {
        void *old = s->val;
        s->key = key;
        s->val = val;
        return old;
    }
    if ((m->len + 1) * 4 > m->cap * 3)
        grow(m);
    size_t mask = m->cap - 1;
    size_t i = h & mask;
    while (m->slots[i].key != NULL)
        i = (i + 1) & mask;
    m->slots[i].key = key;
    m->slots[i].hash = h;
    m->slots[i].val = val;
    m->len++;
    return NULL;
}

void *hmap_del(struct hmap *m, const char *key)
{
    struct hmap_slot *s = find(m, key, hash_str(key));
    if (s == NULL)
        return NULL;
    void *val = s->val;
    size_t mask = m->cap - 1;
    size_t i = (size_t)(s - m->slots);
    /* backward-shift: pull later entries of the cluster into the hole */
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m->slots[j].key == NULL)
            break;
        size_t home = m->slots[j].hash & mask;
        /* can slot j move to i? only if its home is not in (i, j] cyclically */
        int in_range = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!in_range) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].key = NULL;
    m->slots[i].val = NULL;
    m->len--;
    return val;
}
