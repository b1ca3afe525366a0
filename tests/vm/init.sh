#!/bin/sh
# /init of the USB-gadget test VM (tests/vm/machine.py): load the modules, put a tmpfs
# overlay on the host's root (9p, read-only), mount the writable share at its own path,
# run <share>/command.sh in that tree, record its exit status, power off.
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sys /sys
$bb mount -t devtmpfs dev /dev
say() { echo "bcvm: $*" > /dev/console; }
for m in $($bb cat /modules.order); do
    $bb insmod "/lib/modules/$m.ko" || say "insmod $m failed"
done
share=$($bb sed -n 's/.*bcvm\.share=\([^ ]*\).*/\1/p' /proc/cmdline)
opts=trans=virtio,version=9p2000.L,msize=512000
if $bb mount -t 9p -o "$opts,ro,cache=loose" hostroot /host \
   && $bb mount -t tmpfs -o size=256m rw /rw && $bb mkdir -p /rw/upper /rw/work \
   && $bb mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
   && $bb mount -t 9p -o "$opts,cache=mmap" share "/newroot$share"; then
    n=/newroot
    $bb mount -t proc proc $n/proc
    $bb mount -t sysfs sys $n/sys
    $bb mount -t devtmpfs dev $n/dev
    $bb mkdir -p $n/dev/pts $n/dev/shm
    $bb mount -t devpts devpts $n/dev/pts
    $bb mount -t tmpfs shm $n/dev/shm
    $bb mount -t configfs configfs $n/sys/kernel/config
    $bb mount -t tmpfs run $n/run
    $bb hostname bcvm
    $bb chroot $n /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 /bin/sh "$share/command.sh" > /dev/console 2>&1
    echo $? > "$n$share/command.rc"
    $bb sync
else
    say "mounting the host root or the share failed"
fi
$bb poweroff -f
