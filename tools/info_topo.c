/* SPDX-License-Identifier: MIT */
/* sluice-info's view of the node through hwloc: packages, NUMA nodes, cores, PUs and GPUs. */
#include <stdio.h>
#include <string.h>

#include <hwloc.h>

#include "info.h"

/* The NUMA nodes near `obj` (an I/O object): those of its first non-I/O ancestor. */
static void numa_of(hwloc_topology_t topo, hwloc_obj_t obj, char *out, size_t len)
{
    out[0] = '\0';
    hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(topo, obj);
    if (!anc || !anc->nodeset)
        return;
    size_t used = 0;
    unsigned i;
    hwloc_bitmap_foreach_begin(i, anc->nodeset)
    {
        int n = snprintf(out + used, len - used, "%s%u", used ? "," : "", i);
        if (n < 0 || (size_t)n >= len - used)
            break;
        used += (size_t)n;
    }
    hwloc_bitmap_foreach_end();
}

static hwloc_obj_t pci_parent(hwloc_obj_t obj)
{
    while (obj && obj->type != HWLOC_OBJ_PCI_DEVICE)
        obj = obj->parent;
    return obj;
}

static void pci_id(hwloc_obj_t pci, char *out, size_t len)
{
    out[0] = '\0';
    if (pci)
        snprintf(out, len, "%04x:%02x:%02x.%01x", pci->attr->pcidev.domain, pci->attr->pcidev.bus,
                 pci->attr->pcidev.dev, pci->attr->pcidev.func);
}

static void add_gpu(info_topo_t *t, hwloc_topology_t topo, hwloc_obj_t obj, const char *name,
                    const char *kind)
{
    if (t->n_gpus >= INFO_MAX_GPUS)
        return;
    info_gpu_t *g = &t->gpus[t->n_gpus++];
    snprintf(g->name, sizeof g->name, "%s", name ? name : "");
    snprintf(g->kind, sizeof g->kind, "%s", kind);
    const char *model = hwloc_obj_get_info_by_name(obj, "GPUModel");
    hwloc_obj_t pci = pci_parent(obj);
    if (!model && pci)
        model = pci->name; /* "NVIDIA Corporation GH100 [H200]" when hwloc has pci ids */
    snprintf(g->model, sizeof g->model, "%s", model ? model : "");
    pci_id(pci, g->pci, sizeof g->pci);
    numa_of(topo, obj, g->numa, sizeof g->numa);
}

/* Whether a GPU or coprocessor OS device sits under this PCI device. */
static bool has_gpu_osdev(hwloc_obj_t pci)
{
    for (hwloc_obj_t c = pci->io_first_child; c; c = c->next_sibling)
        if (c->type == HWLOC_OBJ_OS_DEVICE && (c->attr->osdev.type == HWLOC_OBJ_OSDEV_GPU ||
                                               c->attr->osdev.type == HWLOC_OBJ_OSDEV_COPROC))
            return true;
    return false;
}

/*
 * GPUs: hwloc's OS devices of type GPU (DRM cards, NVML) and CoProc (CUDA,
 * OpenCL), which need hwloc's plugins for them; and, so that a GPU shows
 * even where hwloc has no such plugin (Debian's has no CUDA one), every
 * PCI display or 3D controller (class 0x03xx) without such a device.
 */
static void gather_gpus(info_topo_t *t, hwloc_topology_t topo)
{
    for (hwloc_obj_t o = hwloc_get_next_osdev(topo, NULL); o; o = hwloc_get_next_osdev(topo, o)) {
        if (o->attr->osdev.type == HWLOC_OBJ_OSDEV_GPU)
            add_gpu(t, topo, o, o->name, o->subtype ? o->subtype : "GPU");
        else if (o->attr->osdev.type == HWLOC_OBJ_OSDEV_COPROC)
            add_gpu(t, topo, o, o->name, o->subtype ? o->subtype : "CoProc");
    }
    for (hwloc_obj_t o = hwloc_get_next_pcidev(topo, NULL); o; o = hwloc_get_next_pcidev(topo, o)) {
        if ((o->attr->pcidev.class_id >> 8) != 0x03 || has_gpu_osdev(o))
            continue;
        char id[32];
        pci_id(o, id, sizeof id);
        add_gpu(t, topo, o, id, "PCI display");
    }
}

/* As sluice_context_create finds it: the NUMA node of the CPU this process last ran on. */
static int my_numa(hwloc_topology_t topo)
{
    int numa = -1;
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (set && hwloc_get_last_cpu_location(topo, set, HWLOC_CPUBIND_PROCESS) == 0) {
        hwloc_obj_t obj = hwloc_get_next_obj_covering_cpuset_by_type(topo, set, HWLOC_OBJ_NUMANODE, NULL);
        if (obj)
            numa = (int)obj->os_index;
    }
    hwloc_bitmap_free(set);
    return numa;
}

void info_topo_gather(info_topo_t *t)
{
    memset(t, 0, sizeof *t);
    t->my_numa = -1;
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) != 0) {
        snprintf(t->error, sizeof t->error, "hwloc_topology_init failed");
        return;
    }
    /* GPUs are I/O objects, left out of a topology by default. */
    hwloc_topology_set_io_types_filter(topo, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    if (hwloc_topology_load(topo) != 0) {
        snprintf(t->error, sizeof t->error, "hwloc_topology_load failed");
        hwloc_topology_destroy(topo);
        return;
    }
    t->ok = true;
    t->packages = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PACKAGE);
    t->cores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
    t->pus = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_PU);
    int n = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_NUMANODE);
    for (int i = 0; i < n && t->n_numa < INFO_MAX_NUMA; i++) {
        hwloc_obj_t o = hwloc_get_obj_by_type(topo, HWLOC_OBJ_NUMANODE, (unsigned)i);
        t->numa[t->n_numa].os_index = o->os_index;
        t->numa[t->n_numa].bytes = o->attr->numanode.local_memory;
        t->n_numa++;
    }
    gather_gpus(t, topo);
    t->my_numa = my_numa(topo);
    hwloc_topology_destroy(topo);
}
