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

/// sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE): starts writeback of a range without waiting.
int clinux_start_writeback(int fd, long long offset, long long length);

/// fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length): frees the blocks of a range (it
/// reads as zeros and SEEK_HOLE finds it) without changing the file's size. 0, or -1 with errno set.
int clinux_punch_hole(int fd, long long offset, long long length);

/// O_DIRECT (also hidden by glibc without _GNU_SOURCE).
int clinux_o_direct(void);

/// Raises the calling thread's nice value alone (Linux keeps one per thread) to `nice`, unless it is that high
/// already: setpriority(PRIO_PROCESS, gettid(), nice). 0 or -1 with errno.
int clinux_lower_thread_priority(int nice);

/// pidfd_open(pid, 0) (Linux 5.3+; glibc has no declaration before 2.36's <sys/pidfd.h>): a descriptor that
/// polls readable once the process has exited. -1 with errno on failure.
int clinux_pidfd_open(int pid);

/// glibc's malloc_trim(3): returns free arena memory to the kernel (malloc.h is not in Swift's Glibc module).
int clinux_malloc_trim(size_t pad);

/// FS_IOC_GETFSSYSFSPATH (Linux 6.10+, newer than Debian 12's headers): the superblock's sysfs directory
/// relative to /sys/fs, e.g. "erofs/erofs-452", of the filesystem `fd` lives on. Writes a NUL-terminated
/// string of at most `size - 1` bytes to `out`. Returns 0, or -1 with errno set (ENOTTY: older kernel).
int clinux_fs_sysfs_path(int fd, char *out, int size);

// MARK: cachefiles on-demand mode (include/uapi/linux/cachefiles.h, Linux 5.19+) and the seed's devnode.
// Swift parses the messages with explicit little-endian reads; these mirror the layouts so the sizes and
// offsets are asserted against the kernel header at compile time (clinux.c).

/// `struct cachefiles_msg`: the 16-byte header of every message read from /dev/cachefiles.
struct clinux_cachefiles_msg {
    uint32_t msg_id;
    uint32_t opcode;
    uint32_t len;
    uint32_t object_id;
};

/// `struct cachefiles_open`: the OPEN payload; the volume key then the cookie key follow it.
struct clinux_cachefiles_open {
    uint32_t volume_key_size;
    uint32_t cookie_key_size;
    uint32_t fd;
    uint32_t flags;
};

/// `struct cachefiles_read`: the READ payload.
struct clinux_cachefiles_read {
    uint64_t off;
    uint64_t len;
};

/// `struct cachefiles_req_in` of the seed patch series (v2, never merged): one request of
/// /dev/cachefiles_ondemand. 8 + 8 + 8 + 255 bytes, padded to 280 by the u64 alignment.
struct clinux_cachefiles_req_in {
    uint64_t id;
    uint64_t off;
    uint64_t len;
    char path[255];
};

/// CACHEFILES_MSG_MAX_SIZE: the largest message one read returns.
int clinux_cachefiles_msg_max_size(void);
/// CACHEFILES_OP_OPEN / CLOSE / READ.
int clinux_cachefiles_op_open(void);
int clinux_cachefiles_op_close(void);
int clinux_cachefiles_op_read(void);
/// CACHEFILES_IOC_READ_COMPLETE (_IOW(0x98, 1, int)).
unsigned long clinux_cachefiles_ioc_read_complete(void);
/// ioctl(anon_fd, CACHEFILES_IOC_READ_COMPLETE, msg_id): releases the reader of READ `msg_id`. Returns 0, or -1
/// with errno set.
int clinux_cachefiles_read_complete(int anon_fd, uint32_t msg_id);

#endif
