#define _GNU_SOURCE
#include "CLinux.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>

_Static_assert(sizeof(struct clinux_peer_cred) == sizeof(struct ucred), "ucred size");
_Static_assert(offsetof(struct clinux_peer_cred, pid) == offsetof(struct ucred, pid), "ucred.pid");
_Static_assert(offsetof(struct clinux_peer_cred, uid) == offsetof(struct ucred, uid), "ucred.uid");
_Static_assert(offsetof(struct clinux_peer_cred, gid) == offsetof(struct ucred, gid), "ucred.gid");

int clinux_peer_cred(int fd, struct clinux_peer_cred *out) {
    socklen_t len = sizeof(*out);
    return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, out, &len);
}

int clinux_so_peercred(void) { return SO_PEERCRED; }

unsigned long clinux_makedev(unsigned int major, unsigned int minor) { return makedev(major, minor); }
