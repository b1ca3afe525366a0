#!/bin/sh
# Runs inside the booted arm64 container (arm64-check-report.service): waits, bounded, for
# bodycam.service to be active (READY=1 sent: Type=notify), samples the watchdog timestamp
# twice to show it is fed, writes what it saw to /var/lib/arm64-check/report, powers off.
out=/var/lib/arm64-check/report
mkdir -p /var/lib/arm64-check
: > "$out"
i=0
while [ "$i" -lt 150 ]; do                       # at most ~300 s of emulated time
    state=$(systemctl show -P ActiveState bodycam.service)
    [ "$state" = active ] && break
    [ "$state" = failed ] && break
    # Restart=always never lets it stay "failed": a unit that keeps restarting has failed.
    [ "$(systemctl show -P NRestarts bodycam.service)" -ge 3 ] && break
    sleep 2; i=$((i + 1))
done
show() { systemctl show -p ActiveState -p SubState -p NRestarts -p WatchdogUSec \
    -p WatchdogTimestampMonotonic -p ExecMainPID "$1"; }
echo "waited=$((i * 2))" >> "$out"
show bodycam.service | sed 's/^/first./' >> "$out"
sleep 12                                          # more than WatchdogSec=10s
show bodycam.service | sed 's/^/second./' >> "$out"
systemctl show -p ActiveState -p Result bodycam-gadget.service | sed 's/^/gadget./' >> "$out"
systemctl is-system-running >> "$out" 2>&1 || true
journalctl -b -u bodycam.service -u bodycam-gadget.service --no-pager -o short-monotonic \
    > /var/lib/arm64-check/journal 2>&1
echo "finished" >> "$out"
systemctl poweroff
