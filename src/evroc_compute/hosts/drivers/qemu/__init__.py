"""Running real VMs with QEMU: images, disks, cloud-init seeds and machines.

A self-contained library for a host agent: `images` keeps base images, `disks` makes a
VM's copy-on-write disks, `seed` writes the NoCloud seed, `machine.QemuMachine` runs one
VM (start, stop, observe, adopt after a restart, hot-plug disks) and `ssh` reaches it.
"""
