#!/usr/bin/env bash
# Boots the Debian package under a real systemd (PID 1 in systemd-nspawn) and
# checks the service from outside:
#   deploy/test-systemd-boot.sh path/to/edge-gateway_VERSION_ARCH.deb
#
# The root is a minimal Debian bookworm from debootstrap, built once and cached
# (EDGE_GATEWAY_TEST_CACHE, default /var/cache/edge-gateway-test/, one directory
# per suite, architecture and package list); each run boots an overlay over it, so
# the cache stays clean. The package is installed with dpkg, the configuration
# edited as an operator would, then the container boots and systemd starts the
# enabled service.
#
# Network: two namespaces this script creates and nothing else. "uplink" holds the
# broker (mosquitto), the simulated device (`edge-gateway simulate`) and a hung
# device (accepts, never answers) on 192.0.2.1; the container's namespace has the
# other end of a veth pair, gw0 with 192.0.2.2 (mqtt.bind_interface: gw0), and no
# route anywhere else.
#
# Checks, one line each ("test-systemd-boot: check NAME: ok" or "...: FAIL: why"):
#   boot              systemd in the container reaches running (or degraded)
#   ready             the unit is active (Type=notify: after READY=1), its status
#                     line says it forwards, data and the online birth arrive
#   sandbox           the process: the edge-gateway user, no capabilities, seccomp
#                     filter mode, no_new_privs, a read-only root; the modes and
#                     owners of /etc/edge-gateway and /var/lib/edge-gateway
#   watchdog          a gateway stopped with SIGSTOP is killed by the watchdog
#                     (WatchdogSec=) and restarted
#   stop-hung-device  `systemctl stop` while a device hangs inside a request: a
#                     clean exit and the retained status "offline" (shutdown)
#   exit-78           a bad configuration exits 78 and is not restarted
#                     (RestartPreventExitStatus=)
# Exit 0 when every check passed, 1 otherwise, 77 (after "test-systemd-boot: SKIP:
# why") when the root is not cached and the Debian mirror cannot be reached, unless
# CI=true: then that is a failure. Needs root, debootstrap, systemd-nspawn
# (systemd-container), mosquitto, mosquitto-clients, socat, iproute2, overlayfs.
set -euo pipefail

say() { echo "test-systemd-boot: $*"; }
fail() { say "FAIL: $*" >&2; exit 1; }

suite=bookworm
include=systemd,systemd-sysv,dbus,libmodbus5,libmosquitto1,libsqlite3-0,libssl3

# The Debian mirror apt on this machine uses for $suite (deb822 .sources first,
# then sources.list); EDGE_GATEWAY_TEST_MIRROR overrides it.
debian_mirror() {
    if [ -n "${EDGE_GATEWAY_TEST_MIRROR:-}" ]; then echo "$EDGE_GATEWAY_TEST_MIRROR"; return; fi
    local found=""
    if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
        found=$(awk -v suite="$suite" 'BEGIN { RS = ""; FS = "\n" }
            {
                types = ""; uris = ""; suites = ""
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/) types = " " substr($i, 7) " "
                    if ($i ~ /^URIs:/) uris = substr($i, 6)
                    if ($i ~ /^Suites:/) suites = " " substr($i, 8) " "
                }
                if (types ~ / deb / && suites ~ (" " suite " ")) { split(uris, u, " "); print u[1]; exit }
            }' /etc/apt/sources.list.d/*.sources)
    fi
    if [ -z "$found" ] && [ -f /etc/apt/sources.list ]; then
        found=$(sed -e 's/\[[^]]*\]//' /etc/apt/sources.list |
                awk -v suite="$suite" '$1 == "deb" && $3 == suite { print $2; exit }')
    fi
    echo "${found:-http://deb.debian.org/debian}"
}

# Prints the cached root's path, building it first if it is missing (once per
# package list; a few minutes). Messages go to stderr; exits 77 to skip.
cached_root() {
    local cache=${EDGE_GATEWAY_TEST_CACHE:-/var/cache/edge-gateway-test}
    local arch key root mirror
    arch=$(dpkg --print-architecture)
    key=$(printf '%s %s minbase %s\n' "$suite" "$arch" "$include" | sha256sum | cut -c1-12)
    root=$cache/root-$suite-$arch-$key
    mkdir -p "$cache"
    exec 9>"$cache/.lock"
    flock 9
    if [ ! -x "$root/lib/systemd/systemd" ]; then
        mirror=$(debian_mirror)
        if ! wget -q -T 15 -t 1 -O /dev/null "$mirror/dists/$suite/Release"; then
            local why="cannot reach the Debian mirror $mirror (debootstrap needs it once to build $root)"
            [ "${CI:-}" = true ] && fail "$why"
            say "SKIP: $why" >&2
            exit 77
        fi
        local partial=$root.partial
        # A run killed inside debootstrap may have left its /proc and /sys mounted.
        findmnt -rn -o TARGET | grep -F "$partial/" | sort -r | xargs -r umount -l
        rm -rf --one-file-system "$partial"
        say "building the cached root $root from $mirror (once; a few minutes)" >&2
        local started=$SECONDS
        if ! debootstrap --variant=minbase --include="$include" "$suite" "$partial" "$mirror" \
                > "$cache/debootstrap.log" 2>&1; then
            tail -20 "$cache/debootstrap.log" >&2
            fail "debootstrap $suite from $mirror failed (log: $cache/debootstrap.log)"
        fi
        mv "$partial" "$root"
        say "cached root built in $((SECONDS - started)) s" >&2
    fi
    flock -u 9
    echo "$root"
}

if [ "${1:-}" != --inside ]; then
    deb=$(readlink -f "${1:?usage: test-systemd-boot.sh DEB}")
    [ -f "$deb" ] || fail "no package at $1 (make package builds it)"
    [ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, namespaces, overlayfs, systemd-nspawn)"
    for tool in debootstrap:debootstrap systemd-nspawn:systemd-container nsenter:util-linux \
                unshare:util-linux wget:wget mosquitto:mosquitto mosquitto_sub:mosquitto-clients \
                socat:socat ip:iproute2 ss:iproute2; do
        command -v "${tool%%:*}" >/dev/null || fail "${tool%%:*} is missing: make deps (Debian package ${tool#*:})"
    done
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || fail "the kernel has no overlayfs"
    root=$(cached_root) || exit $?
    work=$(mktemp -d /tmp/edge-gateway-boot.XXXXXX)
    # Everything runs in new mount and PID namespaces: when the inner script ends or
    # is killed (this process dies: --kill-child), the container, the broker, the
    # network namespaces and the overlay go with them; only $work is left to remove.
    trap 'rm -rf --one-file-system "$work"' EXIT
    unshare --mount --pid --fork --kill-child --mount-proc "$0" --inside "$deb" "$root" "$work"
    exit $?
fi

# ---- inside: private mount and PID namespaces ----
deb=$2
lower=$3
work=$4
root=$work/root
uplink_ip=192.0.2.1
gateway_ip=192.0.2.2
broker_port=1883 device_port=1502 hung_port=1503   # inside namespaces of our own
prefix=edge/gw-01

wait_for() {  # wait_for SECONDS COMMAND...: true once COMMAND succeeds, false at the deadline
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

# Namespaces named in a private /run/netns: they vanish with this mount namespace;
# so do nspawn's lock and propagation directories.
mkdir -p /run/netns /run/systemd/nspawn
mount -t tmpfs tmpfs /run/netns
mount -t tmpfs tmpfs /run/systemd/nspawn
ip netns add uplink
ip netns add box
ip -n uplink link set lo up
ip -n box link set lo up
ip -n uplink link add uplink0 type veth peer name gw0 netns box
ip -n uplink addr add $uplink_ip/30 dev uplink0
ip -n box addr add $gateway_ip/30 dev gw0
ip -n uplink link set uplink0 up
ip -n box link set gw0 up
in_uplink() { nsenter --net=/run/netns/uplink "$@"; }

# The root: an overlay over the cached debootstrap root, the package installed.
mkdir -p "$work/upper" "$work/scratch" "$root"
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$work/upper,workdir=$work/scratch" "$root"
cp "$deb" "$root/root/edge-gateway.deb"
systemd-nspawn -q -D "$root" --register=no --keep-unit --private-network \
    dpkg -i /root/edge-gateway.deb > "$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log"; fail "dpkg -i in the container"; }
[ -L "$root/etc/systemd/system/multi-user.target.wants/edge-gateway.service" ] ||
    fail "the package did not enable edge-gateway.service"

# The operator's edit of the installed configuration: this test's broker and device.
config=$root/etc/edge-gateway/gateway.yaml
sed -i -e "s/host: 10.8.0.1/host: $uplink_ip/" -e "s/port: 1883/port: $broker_port/" \
       -e 's/bind_interface: wg0/bind_interface: gw0/' \
       -e "s/host: 192.168.10.20, port: 502/host: $uplink_ip, port: $device_port/" "$config"
for edited in "host: $uplink_ip" "bind_interface: gw0" "port: $device_port }"; do
    grep -qF "$edited" "$config" || fail "deploy/gateway.example.yaml changed: this test's edit did not apply ($edited)"
done

# The uplink side: broker, simulated device, hung device, a subscriber for everything.
printf 'listener %s %s\nallow_anonymous true\npersistence false\nuser root\n' $broker_port $uplink_ip > "$work/mosquitto.conf"
in_uplink mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
in_uplink "$root/usr/bin/edge-gateway" simulate --host $uplink_ip --port $device_port > "$work/simulate.log" 2>&1 &
in_uplink socat -u TCP-LISTEN:$hung_port,bind=$uplink_ip,reuseaddr,fork /dev/null > "$work/hung.log" 2>&1 &
wait_for 10 in_uplink mosquitto_sub -h $uplink_ip -p $broker_port -t probe -W 1 -E || fail "the broker did not start: $(cat "$work/mosquitto.log")"
in_uplink mosquitto_sub -h $uplink_ip -p $broker_port -t 'edge/#' -v > "$work/received.txt" 2>&1 &

# Boot. `nsenter --net` (not `ip netns exec`, whose /sys remount breaks nspawn's
# cgroup detection); --keep-unit, or the container has no system bus.
in_box_net() { nsenter --net=/run/netns/box "$@"; }
in_box_net systemd-nspawn -D "$root" -b --register=no --keep-unit --console=passive \
    --machine=edge-gateway-test > "$work/nspawn.log" 2>&1 &
nspawn=$!
leader=""
find_leader() {  # the container's PID 1
    # /proc here is this PID namespace's: NSpid has one field for this script's
    # processes and two (the second 1) for the container's init.
    local file nspid
    for file in /proc/[0-9]*/status; do
        nspid=$(grep -s '^NSpid:' "$file") || continue
        if [[ $nspid =~ ^NSpid:[[:space:]]+([0-9]+)[[:space:]]+1$ ]]; then
            leader=${BASH_REMATCH[1]}
            return 0
        fi
    done
    return 1
}
in_box() { nsenter -t "$leader" -a "$@"; }
unit() { in_box systemctl show -p "$1" --value edge-gateway.service; }
received() { grep -c "$1" "$work/received.txt" || true; }
journal() { in_box journalctl -q -o cat -u edge-gateway.service --no-pager 2>/dev/null | tail -${1:-40}; }

failed=0
why=""
because() { why=$(tr '\n' '|' <<<"$*" | sed 's/|$//; s/|/ | /g'); return 1; }
run_check() {
    local name=$1; shift
    why=""
    if "$@"; then
        say "check $name: ok"
    else
        say "check $name: FAIL: $why"
        failed=1
    fi
}

check_boot() {
    wait_for 30 find_leader || { because "no container init under systemd-nspawn: $(tail -20 "$work/nspawn.log")"; return; }
    settled() { case "$(in_box systemctl is-system-running 2>/dev/null)" in running|degraded) return 0;; esac; return 1; }
    wait_for 90 settled || { because "systemd did not finish booting: $(in_box systemctl is-system-running 2>&1); $(tail -20 "$work/nspawn.log")"; return; }
    local state; state=$(in_box systemctl is-system-running 2>&1 || true)
    [ "$state" = running ] || say "boot: $state: $(in_box systemctl --failed --no-legend --plain 2>&1 | tr '\n' ';')"
}

check_ready() {
    local state
    active() { [ "$(unit ActiveState)" = active ]; }
    wait_for 60 active || { because "the unit is $(unit ActiveState)/$(unit SubState), not active; journal: $(journal)"; return; }
    forwarding() { unit StatusText | grep -q "^forwarding to $uplink_ip:$broker_port; polling 1 bus"; }
    wait_for 30 forwarding || { because "status line: '$(unit StatusText)'"; return; }
    say "status line: $(unit StatusText)"
    has_data() { [ "$(received "^$prefix/.*/data {")" -ge 3 ]; }
    wait_for 30 has_data || { because "$(received /data) data messages at the broker; journal: $(journal)"; return; }
    grep -q "^$prefix/status {\"state\":\"online\"" "$work/received.txt" || { because "no online birth: $(head -5 "$work/received.txt")"; return; }
}

check_sandbox() {
    local pid status uid gid
    pid=$(unit MainPID)
    [ "${pid:-0}" -gt 0 ] || { because "no main process"; return; }
    status=$(in_box cat "/proc/$pid/status")
    uid=$(in_box id -u edge-gateway); gid=$(in_box id -g edge-gateway)
    field() { awk -v f="$1:" '$1 == f { $1 = ""; print substr($0, 2) }' <<<"$status"; }
    [ "$(field Uid)" = "$uid $uid $uid $uid" ] || { because "Uid: $(field Uid), not edge-gateway ($uid)"; return; }
    [ "$(field Gid)" = "$gid $gid $gid $gid" ] || { because "Gid: $(field Gid), not edge-gateway ($gid)"; return; }
    local cap
    for cap in CapInh CapPrm CapEff CapBnd CapAmb; do
        [ "$(field $cap)" = 0000000000000000 ] || { because "$cap: $(field $cap)"; return; }
    done
    [ "$(field Seccomp)" = 2 ] || { because "Seccomp: $(field Seccomp), not 2 (filter)"; return; }
    [ "$(field NoNewPrivs)" = 1 ] || { because "NoNewPrivs: $(field NoNewPrivs)"; return; }
    # ProtectSystem=strict: / read-only for the process, its StateDirectory writable.
    local mounts
    mounts=$(in_box cat "/proc/$pid/mountinfo")
    awk '$5 == "/" { print $6 }' <<<"$mounts" | grep -q '^ro' || { because "/ is not read-only for the process"; return; }
    awk '$5 == "/var/lib/edge-gateway" { print $6 }' <<<"$mounts" | grep -q '^rw' || { because "/var/lib/edge-gateway is not writable for the process"; return; }
    local path expected actual
    for expected in "/etc/edge-gateway 750 root:edge-gateway" \
                    "/etc/edge-gateway/gateway.yaml 640 root:edge-gateway" \
                    "/var/lib/edge-gateway 750 edge-gateway:edge-gateway" \
                    "/var/lib/edge-gateway/outbox.sqlite 600 edge-gateway:edge-gateway"; do
        path=${expected%% *}
        actual="$path $(in_box stat -c '%a %U:%G' "$path" 2>&1)"
        [ "$actual" = "$expected" ] || { because "$actual, expected $expected"; return; }
    done
    say "sandbox: uid $uid, CapEff 0, Seccomp 2, NoNewPrivs 1, / read-only"
}

check_watchdog() {
    local pid restarts started
    pid=$(unit MainPID); restarts=$(unit NRestarts)
    in_box systemctl kill --kill-whom=main --signal=SIGSTOP edge-gateway.service
    started=$SECONDS
    restarted() { [ "$(unit NRestarts)" -gt "$restarts" ] && [ "$(unit ActiveState)" = active ] && [ "$(unit MainPID)" != "$pid" ]; }
    # WatchdogSec + TimeoutAbortSec (SIGABRT stays pending in a stopped process) + RestartSec.
    wait_for 120 restarted || { because "not restarted: $(unit ActiveState)/$(unit SubState), NRestarts $(unit NRestarts); journal: $(journal)"; return; }
    journal 200 | grep -q 'Watchdog timeout' || { because "restarted, but the journal has no watchdog timeout: $(journal)"; return; }
    say "watchdog: hung gateway (pid $pid) restarted as pid $(unit MainPID) after $((SECONDS - started)) s"
}

check_stop_with_hung_device() {
    # The operator adds a device that accepts and never answers (issue 9, item 1).
    cat >> "$config" <<DEVICE
  - name: silent-1
    tcp: { host: $uplink_ip, port: $hung_port }
    unit_id: 1
    poll_interval: 1s
    timeout: 2s
    retries: 5
    tags:
      - { name: level, table: holding, address: 0, type: int16 }
DEVICE
    in_box systemctl restart edge-gateway.service || { because "restart with the hung device: $(journal)"; return; }
    inside_request() { [ -n "$(in_box_net ss -Htn state established dst $uplink_ip:$hung_port)" ]; }
    wait_for 30 inside_request || { because "the gateway never connected to the hung device; journal: $(journal)"; return; }
    in_box systemctl stop edge-gateway.service || true
    local result status
    result=$(unit Result); status=$(unit ExecMainStatus)
    local retained=""
    offline() {
        retained=$(in_uplink mosquitto_sub -h $uplink_ip -p $broker_port -t $prefix/status --retained-only -C 1 -W 2 2>&1)
        grep -q '"state":"offline","reason":"shutdown"' <<<"$retained"
    }
    wait_for 10 offline || true
    [ "$result" = success ] && [ "$status" = 0 ] ||
        { because "stop: Result=$result, ExecMainStatus=$status (not a clean exit); retained status: ${retained:-none}; journal: $(journal 15)"; return; }
    offline || { because "retained status after the stop: ${retained:-none}; journal: $(journal 15)"; return; }
}

check_exit_78() {
    local restarts
    restarts=$(unit NRestarts)
    echo "not_a_key: 1" >> "$config"
    in_box systemctl start edge-gateway.service 2>/dev/null && { because "started with a bad configuration"; return; }
    is_failed() { [ "$(unit ActiveState)" = failed ]; }
    # Restart= would put it in activating/auto-restart instead of failed.
    wait_for 15 is_failed || { because "$(unit ActiveState)/$(unit SubState) after a bad configuration"; return; }
    [ "$(unit ExecMainStatus)" = 78 ] || { because "exit status $(unit ExecMainStatus), not 78; journal: $(journal)"; return; }
    [ "$(unit SubState)" = failed ] && [ "$(unit NRestarts)" = "$restarts" ] ||
        { because "restarted: $(unit SubState), NRestarts $(unit NRestarts) (was $restarts)"; return; }
    journal 20 | grep -q /etc/edge-gateway/gateway.yaml || { because "the journal does not name the configuration: $(journal 20)"; return; }
}

run_check boot check_boot
if [ -n "$leader" ]; then
    run_check ready check_ready
    run_check sandbox check_sandbox
    run_check watchdog check_watchdog
    run_check stop-hung-device check_stop_with_hung_device
    run_check exit-78 check_exit_78
fi

if [ $failed -ne 0 ] && [ -n "$leader" ]; then
    say "gateway journal (last lines):"
    journal 60 | sed 's/^/  /' || true
fi
# Power off (nspawn turns SIGTERM into a poweroff request); the PID namespace ends the rest.
kill -TERM $nspawn 2>/dev/null || true
gone() { case "$(ps -o stat= -p "$1")" in ''|Z*) return 0;; esac; return 1; }
wait_for 30 gone $nspawn || kill -KILL $nspawn 2>/dev/null || true
[ $failed -eq 0 ] || exit 1
say "OK"
