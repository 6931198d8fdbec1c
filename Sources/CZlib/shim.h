#ifndef ONDEMAND_CZLIB_SHIM_H
#define ONDEMAND_CZLIB_SHIM_H
#include <zlib.h>

/// inflateInit2 is a macro over inflateInit2_ that passes the library version and stream size.
static inline int czlib_inflate_init_gzip(z_streamp stream) {
    /* 15 window bits + 32: detect gzip or zlib headers automatically. */
    return inflateInit2(stream, 15 + 32);
}

/// deflateInit2 is a macro too: gzip framing (15 window bits + 16), default memory level and strategy.
static inline int czlib_deflate_init_gzip(z_streamp stream, int level) {
    return deflateInit2(stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}

#endif
