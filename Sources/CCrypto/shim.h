#ifndef ONDEMAND_CCRYPTO_SHIM_H
#define ONDEMAND_CCRYPTO_SHIM_H
/* OpenSSL's libcrypto, for SHA-256 with the CPU's SHA extensions (digests of every blob byte we move). */
#include <openssl/evp.h>
#endif
