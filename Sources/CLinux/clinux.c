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

#ifndef FAN_ERRNO_BITS
#define FAN_ERRNO_BITS 8
#define FAN_ERRNO_SHIFT (32 - FAN_ERRNO_BITS)
#define FAN_ERRNO_MASK ((1 << FAN_ERRNO_BITS) - 1)
#endif

_Static_assert(sizeof(struct clinux_fanotify_range_info) == 24, "fanotify_event_info_range is 24 bytes");

uint32_t clinux_fan_deny_errno(int err) {
    return FAN_DENY | ((((uint32_t)err) & FAN_ERRNO_MASK) << FAN_ERRNO_SHIFT);
}

int clinux_fan_event_metadata_len(void) { return (int)FAN_EVENT_METADATA_LEN; }
