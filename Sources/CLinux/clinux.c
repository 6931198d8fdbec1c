#define _GNU_SOURCE
#include "CLinux.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

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

int clinux_send_fd(int socket, int fd, char tag) {
    char control[CMSG_SPACE(sizeof(int))];
    memset(control, 0, sizeof(control));
    struct iovec iov = {.iov_base = &tag, .iov_len = 1};
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control)};
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    header->cmsg_level = SOL_SOCKET;
    header->cmsg_type = SCM_RIGHTS;
    header->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(header), &fd, sizeof(int));
    ssize_t sent;
    do {
        sent = sendmsg(socket, &message, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    return sent == 1 ? 0 : -1;
}

int clinux_recv_fd(int socket, char *tag) {
    char control[CMSG_SPACE(sizeof(int))];
    memset(control, 0, sizeof(control));
    struct iovec iov = {.iov_base = tag, .iov_len = 1};
    struct msghdr message = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control, .msg_controllen = sizeof(control)};
    ssize_t received;
    do {
        received = recvmsg(socket, &message, MSG_CMSG_CLOEXEC);
    } while (received < 0 && errno == EINTR);
    if (received < 0) return -1;
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    if (received == 0 || header == NULL || header->cmsg_level != SOL_SOCKET || header->cmsg_type != SCM_RIGHTS) {
        errno = ENODATA;
        return -1;
    }
    int fd;
    memcpy(&fd, CMSG_DATA(header), sizeof(int));
    return fd;
}

int clinux_seek_data(void) { return SEEK_DATA; }
int clinux_seek_hole(void) { return SEEK_HOLE; }
