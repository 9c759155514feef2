"""The configuration files of the minimal guest: busybox init, dropbear, a NoCloud reader.

The minimal guest is a stand-in for a cloud image that boots in seconds under TCG, so
tests exercise the whole host path (seed, SSH, hot-plug, power-off) quickly. It honours
the part of NoCloud evroc relies on: hostname, evroc-user's SSH keys, static network. It
does not run user-data: that needs the Debian image, which has real cloud-init.
"""

from __future__ import annotations

from . import cpio

KERNEL_CMDLINE = "console=ttyS0"

# Kernel modules the guest needs, in an order that satisfies their dependencies once each
# is expanded with its own dependencies (modprobe --show-depends does that at build time).
# virtio_rng: without the host's entropy dropbear waits ~1.5 s for the kernel's RNG.
MODULES = ("virtio_pci", "virtio_rng", "virtio_blk", "virtio_net", "virtio_scsi", "sd_mod",
           "ata_piix", "sr_mod", "isofs", "button", "evdev")
MODULE_DIR = "lib/modules"
MODULE_ORDER = f"{MODULE_DIR}/load-order"  # one module file name per line

_INITTAB = """\
::sysinit:/etc/init.d/rcS
::respawn:/usr/sbin/dropbear -F -E -R -s -p 22
::ctrlaltdel:/bin/reboot
::shutdown:/bin/umount -a -r
"""

_RCS = """\
#!/bin/sh
# Boot: mount the pseudo filesystems, load drivers, name disks, apply the NoCloud seed.
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/disk/by-id
mount -t devpts devpts /dev/pts
# devtmpfs makes these root-only without udev; evroc-user needs them (2>/dev/null, ssh -t).
chmod 666 /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty /dev/ptmx
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
while read -r module; do insmod "/lib/modules/$module"; done < /lib/modules/load-order
uevent mdev &
mdev -s
ip link set lo up
/etc/init.d/seed
acpid
"""

_SEED = """\
#!/bin/sh
# Applies the NoCloud seed (a filesystem labelled cidata): hostname, SSH keys, network.
seed=/run/seed
device=
for attempt in $(seq 100); do
    for candidate in /dev/sr* /dev/vd*; do
        # The ISO 9660 volume label: 32 bytes at offset 32808 (busybox's findfs cannot read it).
        label=$(dd if="$candidate" bs=8 skip=4101 count=4 2>/dev/null | tr -d ' ')
        [ "$label" = cidata ] || [ "$label" = CIDATA ] && device=$candidate && break 2
    done
    sleep 0.1
done
if [ -n "$device" ]; then
    mkdir -p $seed
    mount -t iso9660 -o ro "$device" $seed
else
    echo "evroc-seed: no filesystem labelled cidata: no hostname, no SSH keys, DHCP" > /dev/console
fi

host=$(sed -n 's/^local-hostname: *//p' $seed/meta-data 2>/dev/null | tr -d "\\"'")
if [ -n "$host" ]; then
    hostname "$host"
    echo "$host" > /etc/hostname
    echo "127.0.1.1 $host" >> /etc/hosts
fi

home=/home/evroc-user
mkdir -p $home/.ssh
cat $seed/meta-data $seed/user-data 2>/dev/null \\
    | grep -oE '(ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}' \\
    | sort -u > $home/.ssh/authorized_keys
chmod 700 $home/.ssh
chmod 600 $home/.ssh/authorized_keys
chown -R 1000:1000 $home
echo "evroc-seed: $(wc -l < $home/.ssh/authorized_keys) SSH key(s) for evroc-user" > /dev/console

ip link set eth0 up
address=$(grep -oE '[0-9]+([.][0-9]+){3}/[0-9]+' $seed/network-config 2>/dev/null | head -n 1)
if [ -n "$address" ]; then
    ip addr add "$address" dev eth0
    gateway=$(sed -n 's/^ *gateway4: *//p' $seed/network-config | tr -d "\\"'")
    [ -n "$gateway" ] && ip route add default via "$gateway" dev eth0
else
    udhcpc -i eth0 -s /etc/udhcpc.script -b -t 10 -T 1
fi
"""

_UDHCPC = """\
#!/bin/sh
# udhcpc's hook: apply a lease to the interface.
case "$1" in
deconfig)
    ip addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    for gateway in $router; do ip route add default via "$gateway" dev "$interface"; break; done
    : > /etc/resolv.conf
    for server in $dns; do echo "nameserver $server" >> /etc/resolv.conf; done
    ;;
esac
"""

_MDEV_CONF = """\
sd[a-z]+ 0:0 0660 */lib/mdev/disk-id
vd[a-z]+ 0:0 0660 */lib/mdev/disk-id
"""

_DISK_ID = """\
#!/bin/sh
# Names disks in /dev/disk/by-id as udev would, from the serials QEMU gives them.
by_id=/dev/disk/by-id
mkdir -p $by_id
if [ "$ACTION" = remove ]; then
    for link in $by_id/*; do
        [ "$(readlink "$link")" = "../../$MDEV" ] && rm -f "$link"
    done
    exit 0
fi
case "$MDEV" in
sd*)
    serial=$(tail -c +5 "/sys/block/$MDEV/device/vpd_pg80" 2>/dev/null | tr -d '\\0 ')
    prefix=scsi-0QEMU_QEMU_HARDDISK_
    ;;
vd*)
    serial=$(cat "/sys/block/$MDEV/serial" 2>/dev/null)
    prefix=virtio-
    ;;
esac
[ -n "$serial" ] && ln -sfn "../../$MDEV" "$by_id/$prefix$serial"
exit 0
"""

_POWER_BUTTON = "#!/bin/sh\npoweroff\n"

_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
evroc-user:x:1000:1000:evroc user:/home/evroc-user:/bin/sh
"""
_SHADOW = "root:*:19000:0:99999:7:::\nevroc-user:*:19000:0:99999:7:::\n"
_GROUP = "root:x:0:\nevroc-user:x:1000:\n"


def entries() -> list[cpio.Entry]:
    """The guest's own files (busybox, dropbear, libraries and modules are added by the build)."""
    directories = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "lib", "dev", "proc", "sys",
                   "run", "tmp", "etc", "etc/init.d", "etc/dropbear", "etc/acpi",
                   "etc/acpi/PWRF", "lib/mdev", MODULE_DIR, "home", "root", "var", "var/log"]
    return [
        *(cpio.directory(name, 0o1777 if name == "tmp" else 0o755) for name in directories),
        cpio.char_device("dev/console", 5, 1),
        cpio.char_device("dev/null", 1, 3, 0o666),
        cpio.symlink("init", "bin/busybox"),
        cpio.symlink("bin/sh", "busybox"),
        cpio.symlink("var/run", "../run"),
        cpio.file("etc/inittab", _INITTAB.encode()),
        cpio.file("etc/init.d/rcS", _RCS.encode(), 0o755),
        cpio.file("etc/init.d/seed", _SEED.encode(), 0o755),
        cpio.file("etc/udhcpc.script", _UDHCPC.encode(), 0o755),
        cpio.file("etc/mdev.conf", _MDEV_CONF.encode()),
        cpio.file("lib/mdev/disk-id", _DISK_ID.encode(), 0o755),
        cpio.file("etc/acpi/PWRF/00000080", _POWER_BUTTON.encode(), 0o755),
        cpio.file("etc/passwd", _PASSWD.encode()),
        cpio.file("etc/shadow", _SHADOW.encode(), 0o600),
        cpio.file("etc/group", _GROUP.encode()),
        cpio.file("etc/shells", b"/bin/sh\n"),
        cpio.file("etc/hosts", b"127.0.0.1 localhost\n"),
        cpio.file("etc/hostname", b"evroc-minimal\n"),
    ]
