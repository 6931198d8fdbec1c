#ifndef ONDEMAND_CZSTD_SHIM_H
#define ONDEMAND_CZSTD_SHIM_H
/* Facebook's zstd, one-shot decompression API (ZSTD_decompress, ZSTD_isError, ZSTD_getErrorName). */
#include <zstd.h>
#endif
