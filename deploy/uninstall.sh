#!/usr/bin/env bash
# Removes what install.sh installed. Keeps /etc/edge-gateway and the outbox in
# /var/lib/edge-gateway (messages not yet forwarded) unless --purge is given.
#   sudo deploy/uninstall.sh [--purge]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "uninstall.sh: run as root (sudo)" >&2; exit 1; }
mode=remove
case "${1:-}" in
    --purge) mode=purge ;;
    "") ;;
    *) echo "usage: uninstall.sh [--purge]" >&2; exit 2 ;;
esac
deploy/debian/prerm remove
rm -f /usr/bin/edge-gateway /lib/systemd/system/edge-gateway.service
rm -rf /usr/share/edge-gateway
deploy/debian/postrm "$mode"
if [ "$mode" = remove ]; then
    echo "removed; kept /etc/edge-gateway and /var/lib/edge-gateway (use --purge to delete them)"
else
    echo "removed with configuration, outbox and user"
fi
