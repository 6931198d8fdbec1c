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

// MARK: fanotify pre-content events (Linux 6.14+). Debian 12's headers predate them, so the missing
// constants and the range record are defined here, with the kernel's values (include/uapi/linux/fanotify.h).
#include <sys/fanotify.h>

#ifndef FAN_PRE_ACCESS
#define FAN_PRE_ACCESS 0x00100000
#endif
#ifndef FAN_EVENT_INFO_TYPE_RANGE
#define FAN_EVENT_INFO_TYPE_RANGE 6
#endif

/// `struct fanotify_event_info_range`: the byte range a FAN_PRE_ACCESS event is about.
struct clinux_fanotify_range_info {
    uint8_t info_type;
    uint8_t pad0;
    uint16_t len;
    uint32_t pad;
    uint64_t offset;
    uint64_t count;
};

/// FAN_DENY_ERRNO(err): a deny response that makes the reader's syscall fail with `err` (6.14+).
uint32_t clinux_fan_deny_errno(int err);

/// FAN_EVENT_METADATA_LEN.
int clinux_fan_event_metadata_len(void);

// MARK: passing descriptors over Unix sockets (SCM_RIGHTS; CMSG_* are macros Swift cannot import).

/// Sends `fd` with a one-byte payload `tag`. Returns 0, or -1 with errno set.
int clinux_send_fd(int socket, int fd, char tag);

/// Receives one descriptor (close-on-exec) and its one-byte tag. Returns the fd, or -1 with errno set
/// (ENODATA: the peer sent no descriptor).
int clinux_recv_fd(int socket, char *tag);

/// SEEK_DATA and SEEK_HOLE (glibc declares them only under _GNU_SOURCE).
int clinux_seek_data(void);
int clinux_seek_hole(void);

#endif
