/* SPDX-License-Identifier: MIT */
/** @file
 * sluice product types: a run-time registry of named layouts with fingerprints. */
#ifndef SLUICE_TYPES_H
#define SLUICE_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A set of product types, looked up by name (sluice_registry_create). */
typedef struct sluice_registry sluice_registry_t;
/** One product type of a registry: its name, layout and fingerprint. */
typedef struct sluice_type sluice_type_t;

/** How a type's bytes are laid out. */
typedef enum sluice_layout {
    SLUICE_LAYOUT_BLOCK = 1,  /**< trivially copyable elements, back to back */
    SLUICE_LAYOUT_SOA = 2,    /**< Structure-of-Arrays: one column per field */
    SLUICE_LAYOUT_CUSTOM = 3, /**< user serialise/deserialise callbacks */
} sluice_layout_t;

#define SLUICE_NAME_MAX 96      /**< longest type or column name, with its NUL */
#define SLUICE_COLUMNS_MAX 64   /**< most columns in one SoA type */

/** One column of a Structure-of-Arrays type. */
typedef struct sluice_column {
    const char *name;          /**< column name, shorter than SLUICE_NAME_MAX */
    uint32_t elem_size;        /**< bytes per element of this column */
    uint32_t align;            /**< column start alignment; a power of two */
} sluice_column_t;

/**
 * Custom callbacks. They run in the caller's thread, must not call sluice,
 * and return 0 or a negative sluice status.
 */
typedef struct sluice_custom_ops {
    /** Bytes needed to serialise `object`. */
    int (*size)(const void *object, size_t *bytes_p, void *user);
    /** Serialise `object` into exactly `bytes` bytes at `out`. */
    int (*serialise)(const void *object, void *out, size_t bytes, void *user);
    /** Rebuild an object from `bytes` bytes at `in` into `object`. */
    int (*deserialise)(const void *in, size_t bytes, void *object, void *user);
    void *user;                /**< passed to each callback */
    const char *version;       /**< enters the fingerprint: bump it when the format changes */
} sluice_custom_ops_t;

/** What sluice_registry_add adds: a type's name and layout. */
typedef struct sluice_type_desc {
    size_t size;               /**< sizeof(sluice_type_desc_t) */
    const char *name;          /**< e.g. "hcal::RecHitSoA"; unique in a registry */
    sluice_layout_t layout;    /**< which of the fields below apply */
    uint32_t elem_size;        /**< BLOCK: bytes per element */
    uint32_t align;            /**< BLOCK: element alignment; a power of two, at most 4096 */
    const sluice_column_t *columns;   /**< SOA */
    uint32_t n_columns;               /**< SOA */
    const sluice_custom_ops_t *custom; /**< CUSTOM; copied */
} sluice_type_desc_t;

/** Create an empty registry. Types it holds live until it is destroyed. */
int sluice_registry_create(sluice_registry_t **registry_p);

/** Destroy the registry and its types. No channel may still use them. */
void sluice_registry_destroy(sluice_registry_t *registry);

/**
 * Add a type. Adding the same name again with the same layout returns the
 * existing type; with another layout it fails with SLUICE_ETYPE. Any
 * number of threads may add and find types in one registry at once; a type
 * handed out stays valid until the registry is destroyed.
 */
int sluice_registry_add(sluice_registry_t *registry, const sluice_type_desc_t *desc,
                        const sluice_type_t **type_p);

/** Find a type by name; SLUICE_ENOTFOUND if absent. */
int sluice_registry_find(const sluice_registry_t *registry, const char *name,
                         const sluice_type_t **type_p);

/** The type's name, as it was added; valid as long as the type. */
const char *sluice_type_name(const sluice_type_t *type);
/** The type's 64-bit fingerprint, which sender and receiver compare when a channel opens. */
uint64_t sluice_type_fingerprint(const sluice_type_t *type);
/** The type's layout. */
sluice_layout_t sluice_type_layout(const sluice_type_t *type);

/**
 * Bytes a product of `count` elements takes (BLOCK and SOA; columns are laid
 * out one after the other, each at its alignment). SLUICE_EINVAL for CUSTOM,
 * SLUICE_ERANGE on overflow.
 */
int sluice_type_bytes(const sluice_type_t *type, uint64_t count, size_t *bytes_p);

/** Byte offset of SOA column `column` in a product of `count` elements. */
int sluice_type_column_offset(const sluice_type_t *type, uint64_t count, uint32_t column,
                              size_t *offset_p);

#ifdef __cplusplus
}
#endif
#endif
