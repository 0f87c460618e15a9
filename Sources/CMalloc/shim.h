// glibc's allocator tuning (<malloc.h>): M_ARENA_MAX is a macro Swift cannot call through.
#include <malloc.h>

// Caps the number of malloc arenas; returns mallopt's result (1 on success).
static inline int cmalloc_limit_arenas(int arenas) {
    return mallopt(M_ARENA_MAX, arenas);
}
