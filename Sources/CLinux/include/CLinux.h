#ifndef ONDEMAND_CLINUX_H
#define ONDEMAND_CLINUX_H
#include <stdint.h>
#include <sys/types.h>

/// The peer credentials of a connected Unix socket (SO_PEERCRED).
/// Layout mirrors the kernel's `struct ucred`; `clinux.c` asserts that at compile time, because glibc only
/// declares `struct ucred` under _GNU_SOURCE, which the Swift Glibc module is not built with.
struct clinux_peer_cred {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
};

/// Reads SO_PEERCRED of `fd`. Returns 0, or -1 with errno set.
int clinux_peer_cred(int fd, struct clinux_peer_cred *out);

/// SO_PEERCRED, for callers that query the option through another API (e.g. NIO's socket options).
int clinux_so_peercred(void);

/// The overlayfs/whiteout and mount constants Swift cannot import because they are function-like macros.
unsigned long clinux_makedev(unsigned int major, unsigned int minor);

#endif
