/* SPDX-License-Identifier: MIT */
/* Product type registry: named layouts and their 64-bit fingerprints. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct sluice_type {
    char name[SLUICE_NAME_MAX];
    sluice_layout_t layout;
    uint32_t elem_size;
    uint32_t align;
    uint32_t n_columns;
    struct {
        char name[SLUICE_NAME_MAX];
        uint32_t elem_size;
        uint32_t align;
    } columns[SLUICE_COLUMNS_MAX];
    sluice_custom_ops_t custom;
    char version[SLUICE_NAME_MAX];
    uint64_t fingerprint;
    sluice_type_t *next;
};

/* Types are never removed before destroy: a type handed out stays valid. */
struct sluice_registry {
    pthread_mutex_t lock;     /* the list; held only while it is walked or extended */
    sluice_type_t *head;
};

int sluice_registry_create(sluice_registry_t **registry_p)
{
    if (!registry_p)
        return sl_fail(SLUICE_EINVAL, "registry_p is NULL");
    sluice_registry_t *r = calloc(1, sizeof *r);
    if (!r)
        return sl_fail(SLUICE_ENOMEM, "cannot allocate a type registry");
    pthread_mutex_init(&r->lock, NULL);
    *registry_p = r;
    return SLUICE_OK;
}

void sluice_registry_destroy(sluice_registry_t *registry)
{
    if (!registry)
        return;
    for (sluice_type_t *t = registry->head, *n; t; t = n) {
        n = t->next;
        free(t);
    }
    pthread_mutex_destroy(&registry->lock);
    free(registry);
}

static int sl_copy_name(char *dst, const char *src, const char *what)
{
    if (!src || !*src)
        return sl_fail(SLUICE_EINVAL, "%s name is empty", what);
    size_t n = strlen(src);
    if (n >= SLUICE_NAME_MAX)
        return sl_fail(SLUICE_ERANGE, "%s name \"%.32s...\" is longer than %d bytes", what, src,
                       SLUICE_NAME_MAX - 1);
    memcpy(dst, src, n + 1);
    return SLUICE_OK;
}

static uint64_t sl_hash_u32(uint64_t h, uint32_t v) { return sl_fnv1a(h, &v, sizeof v); }

static uint64_t sl_hash_str(uint64_t h, const char *s) { return sl_fnv1a(h, s, strlen(s) + 1); }

/* The fingerprint covers everything both sides must agree on, and nothing else. */
static uint64_t sl_fingerprint(const sluice_type_t *t)
{
    uint64_t h = sl_hash_str(SL_FNV_OFFSET, t->name);
    h = sl_hash_u32(h, (uint32_t)t->layout);
    switch (t->layout) {
    case SLUICE_LAYOUT_BLOCK:
        h = sl_hash_u32(sl_hash_u32(h, t->elem_size), t->align);
        break;
    case SLUICE_LAYOUT_SOA:
        h = sl_hash_u32(h, t->n_columns);
        for (uint32_t i = 0; i < t->n_columns; i++) {
            h = sl_hash_str(h, t->columns[i].name);
            h = sl_hash_u32(sl_hash_u32(h, t->columns[i].elem_size), t->columns[i].align);
        }
        break;
    case SLUICE_LAYOUT_CUSTOM:
        h = sl_hash_str(h, t->version);
        break;
    }
    return h;
}

static int sl_check_align(uint32_t align, const char *what, const char *name)
{
    if (!sl_is_pow2(align) || align > 4096)
        return sl_fail(SLUICE_EINVAL, "%s \"%s\": alignment %u is not a power of two <= 4096",
                       what, name, align);
    return SLUICE_OK;
}

static int sl_type_fill(sluice_type_t *t, const sluice_type_desc_t *d)
{
    int rc = sl_copy_name(t->name, d->name, "type");
    if (rc)
        return rc;
    t->layout = d->layout;
    switch (d->layout) {
    case SLUICE_LAYOUT_BLOCK:
        if (d->elem_size == 0)
            return sl_fail(SLUICE_EINVAL, "type \"%s\": element size is 0", t->name);
        if ((rc = sl_check_align(d->align, "type", t->name)))
            return rc;
        t->elem_size = d->elem_size;
        t->align = d->align;
        return SLUICE_OK;
    case SLUICE_LAYOUT_SOA:
        if (d->n_columns == 0 || d->n_columns > SLUICE_COLUMNS_MAX || !d->columns)
            return sl_fail(SLUICE_EINVAL, "type \"%s\": %u columns (need 1..%d)", t->name,
                           d->n_columns, SLUICE_COLUMNS_MAX);
        t->n_columns = d->n_columns;
        t->align = 1;
        for (uint32_t i = 0; i < d->n_columns; i++) {
            const sluice_column_t *c = &d->columns[i];
            if ((rc = sl_copy_name(t->columns[i].name, c->name, "column")))
                return rc;
            if (c->elem_size == 0)
                return sl_fail(SLUICE_EINVAL, "type \"%s\" column \"%s\": element size is 0",
                               t->name, c->name);
            if ((rc = sl_check_align(c->align, "column", c->name)))
                return rc;
            t->columns[i].elem_size = c->elem_size;
            t->columns[i].align = c->align;
            t->elem_size += c->elem_size;
            if (c->align > t->align)
                t->align = c->align;
        }
        return SLUICE_OK;
    case SLUICE_LAYOUT_CUSTOM:
        if (!d->custom || !d->custom->size || !d->custom->serialise || !d->custom->deserialise)
            return sl_fail(SLUICE_EINVAL, "type \"%s\": custom layout needs size, serialise and "
                                          "deserialise callbacks", t->name);
        t->custom = *d->custom;
        t->align = 64;
        return sl_copy_name(t->version, d->custom->version ? d->custom->version : "0",
                            "custom version");
    }
    return sl_fail(SLUICE_EINVAL, "type \"%s\": unknown layout %d", t->name, (int)d->layout);
}

int sluice_registry_add(sluice_registry_t *registry, const sluice_type_desc_t *desc,
                        const sluice_type_t **type_p)
{
    if (!registry || !desc || !type_p)
        return sl_fail(SLUICE_EINVAL, "registry, desc and type_p must not be NULL");
    if (desc->size < sizeof *desc)
        return sl_fail(SLUICE_EINVAL, "type descriptor size %zu is smaller than %zu", desc->size,
                       sizeof *desc);
    sluice_type_t *t = calloc(1, sizeof *t);
    if (!t)
        return sl_fail(SLUICE_ENOMEM, "cannot allocate a type");
    int rc = sl_type_fill(t, desc);
    if (rc) {
        free(t);
        return rc;
    }
    t->fingerprint = sl_fingerprint(t);
    pthread_mutex_lock(&registry->lock);
    for (sluice_type_t *o = registry->head; o; o = o->next) {
        if (strcmp(o->name, t->name) != 0)
            continue;
        pthread_mutex_unlock(&registry->lock);
        if (o->fingerprint != t->fingerprint) {
            rc = sl_fail(SLUICE_ETYPE, "type \"%s\" is already registered with another layout "
                                       "(fingerprint 0x%016llx, new 0x%016llx)",
                         t->name, (unsigned long long)o->fingerprint,
                         (unsigned long long)t->fingerprint);
            free(t);
            return rc;
        }
        free(t);
        *type_p = o;
        return SLUICE_OK;
    }
    t->next = registry->head;
    registry->head = t;
    pthread_mutex_unlock(&registry->lock);
    *type_p = t;
    return SLUICE_OK;
}

int sluice_registry_find(const sluice_registry_t *registry, const char *name,
                         const sluice_type_t **type_p)
{
    if (!registry || !name || !type_p)
        return sl_fail(SLUICE_EINVAL, "registry, name and type_p must not be NULL");
    sluice_registry_t *r = (sluice_registry_t *)registry; /* the lock only */
    pthread_mutex_lock(&r->lock);
    const sluice_type_t *t = r->head;
    while (t && strcmp(t->name, name) != 0)
        t = t->next;
    pthread_mutex_unlock(&r->lock);
    if (t) {
        *type_p = t;
        return SLUICE_OK;
    }
    return sl_fail(SLUICE_ENOTFOUND, "no type named \"%s\" in the registry", name);
}

const char *sluice_type_name(const sluice_type_t *type) { return type->name; }
uint64_t sluice_type_fingerprint(const sluice_type_t *type) { return type->fingerprint; }
sluice_layout_t sluice_type_layout(const sluice_type_t *type) { return type->layout; }

const sluice_custom_ops_t *sl_type_custom(const sluice_type_t *type)
{
    return type->layout == SLUICE_LAYOUT_CUSTOM ? &type->custom : NULL;
}

/* Walks the columns up to `stop` (or all), returning the offset reached. */
static int sl_soa_walk(const sluice_type_t *t, uint64_t count, uint32_t stop, size_t *off_p)
{
    uint64_t off = 0;
    for (uint32_t i = 0; i < t->n_columns; i++) {
        off = sl_align_up(off, t->columns[i].align);
        if (i == stop)
            break;
        if (count > (UINT64_MAX - off) / t->columns[i].elem_size)
            return sl_fail(SLUICE_ERANGE, "type \"%s\": %llu elements overflow", t->name,
                           (unsigned long long)count);
        off += count * t->columns[i].elem_size;
    }
    if (off > SIZE_MAX)
        return sl_fail(SLUICE_ERANGE, "type \"%s\": product too large", t->name);
    *off_p = (size_t)off;
    return SLUICE_OK;
}

int sluice_type_bytes(const sluice_type_t *type, uint64_t count, size_t *bytes_p)
{
    if (!type || !bytes_p)
        return sl_fail(SLUICE_EINVAL, "type and bytes_p must not be NULL");
    switch (type->layout) {
    case SLUICE_LAYOUT_BLOCK:
        if (count > SIZE_MAX / type->elem_size)
            return sl_fail(SLUICE_ERANGE, "type \"%s\": %llu elements overflow", type->name,
                           (unsigned long long)count);
        *bytes_p = (size_t)count * type->elem_size;
        return SLUICE_OK;
    case SLUICE_LAYOUT_SOA:
        return sl_soa_walk(type, count, UINT32_MAX, bytes_p);
    case SLUICE_LAYOUT_CUSTOM:
        break;
    }
    return sl_fail(SLUICE_EINVAL, "type \"%s\" has a custom layout: its size depends on the object",
                   type->name);
}

int sluice_type_column_offset(const sluice_type_t *type, uint64_t count, uint32_t column,
                              size_t *offset_p)
{
    if (!type || !offset_p)
        return sl_fail(SLUICE_EINVAL, "type and offset_p must not be NULL");
    if (type->layout != SLUICE_LAYOUT_SOA || column >= type->n_columns)
        return sl_fail(SLUICE_EINVAL, "type \"%s\" has no column %u", type->name, column);
    return sl_soa_walk(type, count, column, offset_p);
}
