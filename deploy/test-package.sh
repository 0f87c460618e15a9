#!/usr/bin/env bash
# Installs the Debian package for real into a throwaway root and runs it there:
#   deploy/test-package.sh path/to/edge-gateway_VERSION_ARCH.deb [path/to/edge-monitor_VERSION_ARCH.deb]
#
# The throwaway root is a network-namespaced chroot built from this machine's own
# files: /usr, /etc and /var are overlay mounts (the host's files below, every
# write going to a temporary upper directory), /opt (where the Swift toolchain
# lives) is absent, and the network namespace has only its own loopback. Inside:
# dpkg -i (the maintainer scripts create the user and the configuration), a
# broker and a simulated device on loopback, the installed binary as the
# edge-gateway user with the installed configuration (edited as an operator
# would), a subscriber that must see the birth and data, then dpkg -r (keeps
# configuration and outbox) and dpkg -P (removes them and the user).
# With the edge-monitor package too: installed beside it (user, configuration,
# not enabled), run as its user with the installed configuration, its API must
# list the gateway and its page answer; then removed and purged the same way.
# Needs root, unshare, overlayfs. Prints "test-package: OK" on success.
set -euo pipefail

fail() { echo "test-package: FAIL: $*" >&2; exit 1; }

if [ "${1:-}" != --inside ]; then
    deb=$(readlink -f "${1:?usage: test-package.sh DEB [MONITOR_DEB]}")
    [ -f "$deb" ] || fail "no package at $1 (make package builds it)"
    monitor_deb=
    if [ -n "${2:-}" ]; then
        monitor_deb=$(readlink -f "$2")
        [ -f "$monitor_deb" ] || fail "no package at $2 (make package builds it)"
    fi
    [ "$(id -u)" -eq 0 ] || fail "needs root (mount and network namespaces, overlayfs, chroot)"
    for tool in unshare chroot mosquitto mosquitto_sub setpriv; do
        command -v "$tool" >/dev/null || fail "$tool is missing (make deps)"
    done
    grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || fail "the kernel has no overlayfs"
    work=$(mktemp -d /tmp/edge-gateway-root.XXXXXX)
    # The namespaces die with the script's child, and their mounts and processes
    # with them; only the directory is left to remove.
    trap 'rm -rf "$work"' EXIT
    unshare --mount --net --pid --fork --kill-child "$0" --inside "$deb" "$work" "$monitor_deb"
    exit $?
fi

deb=$2
work=$3
monitor_deb=${4:-}
root=$work/root
mount --make-rprivate /
mkdir -p "$root"
for dir in usr etc var; do
    mkdir -p "$work/upper/$dir" "$work/scratch/$dir" "$root/$dir"
    mount -t overlay overlay -o "lowerdir=/$dir,upperdir=$work/upper/$dir,workdir=$work/scratch/$dir" "$root/$dir"
done
for link in bin sbin lib lib64; do
    [ -L "/$link" ] && ln -s "$(readlink "/$link")" "$root/$link"
done
mkdir -p "$root/tmp" "$root/run" "$root/proc" "$root/dev" "$root/root"
mount -t tmpfs tmpfs "$root/tmp"
mount -t tmpfs tmpfs "$root/run"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
ip link set lo up
cp "$deb" "$root/tmp/edge-gateway.deb"
[ -z "$monitor_deb" ] || cp "$monitor_deb" "$root/tmp/edge-monitor.deb"
[ -e "$root/opt/swift" ] && fail "the Swift toolchain is visible in the throwaway root"

cat > "$root/tmp/inside.sh" <<'INSIDE'
set -eu
fail() { echo "test-package: FAIL: $*" >&2; exit 1; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    limit=$(( $1 * 10 )); what=$2; shift 2
    i=0; until "$@" >/dev/null 2>&1; do i=$((i + 1)); [ $i -lt $limit ] || fail "timed out waiting for $what"; sleep 0.1; done
}
dpkg -i /tmp/edge-gateway.deb
id edge-gateway || fail "the package did not create the user"
[ -f /etc/edge-gateway/gateway.yaml ] || fail "no /etc/edge-gateway/gateway.yaml"
if ldd /usr/bin/edge-gateway | grep -q 'libswift\|not found'; then ldd /usr/bin/edge-gateway; fail "the binary needs libraries the target lacks"; fi
edge-gateway --version

# The operator's edit: the broker and the device of this test, bound to loopback.
sed -i -e 's/host: 10.8.0.1/host: 127.0.0.1/' -e 's/bind_interface: wg0/bind_interface: lo/' \
       -e 's/host: 192.168.10.20, port: 502/host: 127.0.0.1, port: 1502/' -e 's/poll_interval: 1s/poll_interval: 200ms/' \
       /etc/edge-gateway/gateway.yaml
edge-gateway check-config /etc/edge-gateway/gateway.yaml

printf 'listener 1883 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\n' > /tmp/mosquitto.conf
mosquitto -c /tmp/mosquitto.conf > /tmp/mosquitto.log 2>&1 &
edge-gateway simulate --port 1502 > /tmp/simulate.log 2>&1 &
wait_for 10 "the broker" mosquitto_sub -h 127.0.0.1 -t probe -W 1 -E
mosquitto_sub -h 127.0.0.1 -t 'edge/#' -v > /tmp/received.txt 2>&1 &
setpriv --reuid edge-gateway --regid edge-gateway --init-groups --no-new-privs /usr/bin/edge-gateway run --config /etc/edge-gateway/gateway.yaml > /tmp/gateway.log 2>&1 &
gateway=$!
has_data() { [ "$(grep -c '/data {' /tmp/received.txt)" -ge 5 ]; }
if ! wait_for 20 "5 data messages" has_data; then cat /tmp/gateway.log; fail "no data"; fi
grep -q 'edge/gw-01/status {"state":"online"' /tmp/received.txt || fail "no birth message"
seqs=$(grep -o '"seq":[0-9]*' /tmp/received.txt | cut -d: -f2 | tr '\n' ' ')
expected=$(seq 1 "$(echo $seqs | wc -w)" | tr '\n' ' ')
[ "$seqs" = "$expected" ] || fail "seq not 1...n: $seqs"
kill -TERM $gateway
wait $gateway || fail "the gateway did not exit cleanly"
wait_for 5 "the offline status" grep -q '"state":"offline","reason":"shutdown"' /tmp/received.txt
echo "test-package: messages flowed: $(grep -c '/data {' /tmp/received.txt) data messages, seq $(echo $seqs | cut -d' ' -f1)...$(echo $seqs | awk '{print $NF}')"

if [ -f /tmp/edge-monitor.deb ]; then
    dpkg -i /tmp/edge-monitor.deb
    id edge-monitor || fail "the monitor package did not create the user"
    [ -f /etc/edge-monitor/monitor.yaml ] || fail "no /etc/edge-monitor/monitor.yaml"
    [ ! -e /etc/systemd/system/multi-user.target.wants/edge-monitor.service ] || fail "the monitor package enabled the service"
    if ldd /usr/bin/edge-monitor | grep -q 'libswift\|not found'; then ldd /usr/bin/edge-monitor; fail "edge-monitor needs libraries the target lacks"; fi
    # Every library the binary links comes from a package its Depends names.
    depends=$(dpkg-query -W -f='${Depends}' edge-monitor)
    for lib in $(objdump -p /usr/bin/edge-monitor | awk '$1 == "NEEDED" {print $2}'); do
        case $lib in ld-linux*) continue ;; esac   # the dynamic loader: libc6
        path=$(ldd /usr/bin/edge-monitor | awk -v lib="$lib" '$1 == lib {print $3}')
        # dpkg knows a library by the path its package ships (/lib or /usr/lib on a merged /usr).
        package=$( (dpkg -S "$path" || dpkg -S "$(readlink -f "$path")") 2>/dev/null | head -1 | cut -d: -f1)
        [ -n "$package" ] || fail "no package ships $lib ($path) for edge-monitor"
        echo "$depends" | tr ',' '\n' | grep -qw "$package" || fail "edge-monitor links $lib from $package, which its Depends lacks: $depends"
    done
    # The installed configuration as shipped: broker 127.0.0.1:1883, page on 127.0.0.1:9470.
    setpriv --reuid edge-monitor --regid edge-monitor --init-groups --no-new-privs \
        /usr/bin/edge-monitor run --config /etc/edge-monitor/monitor.yaml > /tmp/monitor.log 2>&1 &
    monitor=$!
    fleet_lists_gateway() {
        python3 -c 'import json, sys, urllib.request
fleet = json.load(urllib.request.urlopen("http://127.0.0.1:9470/api/fleet", timeout=2))
sys.exit(0 if any(g.get("id") == "gw-01" for g in fleet.get("gateways", [])) else 1)'
    }
    # In a subshell, so that a timeout shows the monitor's log before failing.
    if ! (wait_for 30 "the monitor to list gw-01" fleet_lists_gateway); then cat /tmp/monitor.log; fail "the monitor does not list the gateway"; fi
    python3 -c 'import urllib.request; page = urllib.request.urlopen("http://127.0.0.1:9470/", timeout=2).read().decode()
assert "edge-monitor" in page and "api/fleet" in page, page[:200]' || fail "the monitor does not serve its page"
    [ -f /var/lib/edge-monitor/monitor.sqlite ] || fail "the monitor keeps no state in /var/lib/edge-monitor"
    kill -TERM $monitor
    wait $monitor || fail "the monitor did not exit cleanly"
    echo "test-package: edge-monitor installed (not enabled), ran as edge-monitor, listed gw-01"
    dpkg -r edge-monitor
    [ ! -e /usr/bin/edge-monitor ] || fail "dpkg -r left the monitor binary"
    [ -f /etc/edge-monitor/monitor.yaml ] || fail "dpkg -r removed the monitor configuration"
    [ -f /var/lib/edge-monitor/monitor.sqlite ] || fail "dpkg -r removed the monitor state"
    dpkg -P edge-monitor
    [ ! -e /etc/edge-monitor ] || fail "dpkg -P left /etc/edge-monitor"
    [ ! -e /var/lib/edge-monitor ] || fail "dpkg -P left /var/lib/edge-monitor"
    ! id edge-monitor 2>/dev/null || fail "dpkg -P left the monitor user"
fi

dpkg -r edge-gateway
[ ! -e /usr/bin/edge-gateway ] || fail "dpkg -r left the binary"
[ -f /etc/edge-gateway/gateway.yaml ] || fail "dpkg -r removed the configuration"
[ -f /var/lib/edge-gateway/outbox.sqlite ] || fail "dpkg -r removed the outbox"
dpkg -P edge-gateway
[ ! -e /etc/edge-gateway ] || fail "dpkg -P left /etc/edge-gateway"
[ ! -e /var/lib/edge-gateway ] || fail "dpkg -P left /var/lib/edge-gateway"
! id edge-gateway 2>/dev/null || fail "dpkg -P left the user"
echo "test-package: OK (installed, ran as edge-gateway, removed keeping data, purged)"
INSIDE
chroot "$root" /bin/sh /tmp/inside.sh
