#ifndef ONDEMAND_CSYSTEMD_SHIM_H
#define ONDEMAND_CSYSTEMD_SHIM_H
#include <systemd/sd-daemon.h>

/// SD_LISTEN_FDS_START is a macro: exported as a function so the value is never retyped in Swift.
static inline int csystemd_listen_fds_start(void) { return SD_LISTEN_FDS_START; }

#endif
