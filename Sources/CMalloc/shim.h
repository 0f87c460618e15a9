// glibc's allocator tuning (<malloc.h>): M_ARENA_MAX and M_MMAP_THRESHOLD are macros Swift cannot call through.
#include <malloc.h>

// Caps the number of malloc arenas; returns mallopt's result (1 on success).
static inline int cmalloc_limit_arenas(int arenas) {
    return mallopt(M_ARENA_MAX, arenas);
}

// Serves every allocation of at least `bytes` with its own mmap, returned to the system
// when freed. Setting it also turns off glibc's dynamic threshold (which otherwise rises
// to the size of the largest freed block, so later blocks of that size stay in the heap).
// Returns mallopt's result (1 on success).
static inline int cmalloc_fixed_mmap_threshold(int bytes) {
    return mallopt(M_MMAP_THRESHOLD, bytes);
}
