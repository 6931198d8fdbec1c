#ifndef ONDEMAND_CLZ4_SHIM_H
#define ONDEMAND_CLZ4_SHIM_H
/* liblz4 block format (LZ4_decompress_safe); nydus's lz4_block is the raw block format, no frame. */
#include <lz4.h>
#endif
