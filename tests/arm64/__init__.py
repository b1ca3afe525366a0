"""The arm64 install check: a cached Debian Bookworm arm64 root filesystem under QEMU."""
