// The kernel's NTP state (glibc's <sys/timex.h>), read-only.
#include <sys/timex.h>
#include <errno.h>

// Reads the kernel's NTP state into `state` without changing anything: `modes` is
// zero, so ntp_adjtime(3) only reports (no privilege needed, the clock is untouched).
// Returns the clock state (TIME_OK … TIME_ERROR) or -1; `error` gets errno at the call.
static inline int ctimex_read(struct timex *state, int *error) {
    state->modes = 0;
    int result = ntp_adjtime(state);
    *error = result == -1 ? errno : 0;
    return result;
}
