#ifndef ONDEMAND_CZLIB_SHIM_H
#define ONDEMAND_CZLIB_SHIM_H
#include <zlib.h>

/// inflateInit2 is a macro over inflateInit2_ that passes the library version and stream size.
static inline int czlib_inflate_init_gzip(z_streamp stream) {
    /* 15 window bits + 32: detect gzip or zlib headers automatically. */
    return inflateInit2(stream, 15 + 32);
}

/// Raw deflate (no header, 15 window bits): inflating from a checkpoint inside a gzip member.
static inline int czlib_inflate_init_raw(z_streamp stream) {
    return inflateInit2(stream, -15);
}

/// The most history a deflate stream may refer back to: a checkpoint keeps this much of the output before it.
static inline unsigned czlib_window_size(void) { return 32768U; }

/// deflateInit2 is a macro too: gzip framing (15 window bits + 16), default memory level and strategy.
static inline int czlib_deflate_init_gzip(z_streamp stream, int level) {
    return deflateInit2(stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
}

#endif
