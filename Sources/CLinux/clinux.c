#define _GNU_SOURCE
#include "CLinux.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <errno.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/ioctl.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/syscall.h>

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

int clinux_punch_hole(int fd, long long offset, long long length) {
    return fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
}

int clinux_lower_thread_priority(int nice) {
    id_t self = (id_t)gettid();
    errno = 0;
    int current = getpriority(PRIO_PROCESS, self);
    if (errno != 0) return -1;
    return current >= nice ? 0 : setpriority(PRIO_PROCESS, self, nice);
}

int clinux_pidfd_open(int pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

int clinux_malloc_trim(size_t pad) { return malloc_trim(pad); }

int clinux_start_writeback(int fd, long long offset, long long length) {
    return sync_file_range(fd, (off_t)offset, (off_t)length, SYNC_FILE_RANGE_WRITE);
}
int clinux_o_direct(void) { return O_DIRECT; }

/// `struct fs_sysfs_path` of include/uapi/linux/fs.h (6.10+).
struct clinux_fs_sysfs_path {
    uint8_t len;
    uint8_t name[128];
};
#ifndef FS_IOC_GETFSSYSFSPATH
#define FS_IOC_GETFSSYSFSPATH _IOR(0x15, 1, struct clinux_fs_sysfs_path)
#endif

int clinux_fs_sysfs_path(int fd, char *out, int size) {
    struct clinux_fs_sysfs_path path;
    memset(&path, 0, sizeof(path));
    if (ioctl(fd, FS_IOC_GETFSSYSFSPATH, &path) != 0) return -1;
    if (size <= 0 || path.len >= sizeof(path.name) || path.len >= (size_t)size) {
        errno = ERANGE;
        return -1;
    }
    memcpy(out, path.name, path.len);
    out[path.len] = 0;
    return 0;
}

#include <linux/cachefiles.h>

_Static_assert(sizeof(struct clinux_cachefiles_msg) == sizeof(struct cachefiles_msg), "cachefiles_msg is 16 bytes");
_Static_assert(offsetof(struct clinux_cachefiles_msg, object_id) == offsetof(struct cachefiles_msg, object_id), "object_id");
_Static_assert(offsetof(struct cachefiles_msg, data) == 16, "payload at 16");
_Static_assert(sizeof(struct clinux_cachefiles_open) == sizeof(struct cachefiles_open), "cachefiles_open is 16 bytes");
_Static_assert(offsetof(struct clinux_cachefiles_open, fd) == offsetof(struct cachefiles_open, fd), "open.fd");
_Static_assert(sizeof(struct clinux_cachefiles_read) == sizeof(struct cachefiles_read), "cachefiles_read is 16 bytes");
_Static_assert(offsetof(struct clinux_cachefiles_req_in, path) == 24, "req_in.path at 24");
_Static_assert(sizeof(struct clinux_cachefiles_req_in) == 280, "req_in is 280 bytes");

int clinux_cachefiles_msg_max_size(void) { return CACHEFILES_MSG_MAX_SIZE; }
int clinux_cachefiles_op_open(void) { return CACHEFILES_OP_OPEN; }
int clinux_cachefiles_op_close(void) { return CACHEFILES_OP_CLOSE; }
int clinux_cachefiles_op_read(void) { return CACHEFILES_OP_READ; }
unsigned long clinux_cachefiles_ioc_read_complete(void) { return CACHEFILES_IOC_READ_COMPLETE; }

int clinux_cachefiles_read_complete(int anon_fd, uint32_t msg_id) {
    return ioctl(anon_fd, CACHEFILES_IOC_READ_COMPLETE, (unsigned long)msg_id);
}
