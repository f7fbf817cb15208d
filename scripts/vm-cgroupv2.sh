#!/usr/bin/env bash
# make test-cgroupv2: the e2e tests named in TESTS, in a QEMU VM (no KVM
# needed; slow under emulation) running Debian's kernel with only the
# unified cgroup hierarchy (v2), as most current distributions do. The VM
# boots this host's root filesystem read-only over 9p, with tmpfs where
# anything is written, so it runs the same binaries the suite built.
set -euo pipefail

: "${CACHE:?}" "${WARREN_BIN:?}" "${WARREN_RUNSC:?}" "${WARREN_TEST_IMAGE_DIR:?}"
TESTS=${TESTS:-'^(TestExec|TestLimits|TestOOM|TestDeleteRemovesEveryTrace|TestPauseResume)$'}
VM=$CACHE/vm
mkdir -p "$VM"

need=()
for pkg in qemu-system-x86 kmod busybox-static cpio; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
	echo "vm: installing ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Debian's current kernel, unpacked once.
if [ ! -f "$VM/kernel.version" ]; then
	pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/ { print $2; exit }')
	echo "vm: fetching $pkg"
	rm -rf "$VM/k" && mkdir -p "$VM/k"
	(cd "$VM" && apt-get download "$pkg" 2>/dev/null && dpkg-deb -x "$pkg"_*.deb k && rm -f "$pkg"_*.deb)
	ls "$VM/k/lib/modules" > "$VM/kernel.version"
	depmod -b "$VM/k" "$(cat "$VM/kernel.version")"
fi
kver=$(cat "$VM/kernel.version")
mods=$VM/k/lib/modules/$kver

# The initramfs: busybox, the modules that reach the host's files over
# 9p, and an init that mounts them and hands over to stage2.sh.
rm -rf "$VM/initramfs" && mkdir -p "$VM/initramfs"/{bin,dev,proc,sys,newroot,mods}
cp "$(command -v busybox)" "$VM/initramfs/bin/busybox"
# In dependency order, as modprobe would load them.
order=$(for m in virtio_pci 9pnet_virtio 9p; do
	modprobe -d "$VM/k" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++')
for f in $order; do
	cp "$f" "$VM/initramfs/mods/"
done
order=$(for f in $order; do basename "$f" .ko; done | tr '\n' ' ')
cat > "$VM/initramfs/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $order; do insmod /mods/\$m.ko || echo "vm: insmod \$m failed"; done; ls /sys/bus/virtio/devices/ 2>&1; cat /sys/bus/virtio/devices/*/mount_tag 2>&1
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose hostroot /newroot || { echo "vm: cannot mount the host's root"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L out /newroot/mnt || { echo "vm: cannot mount the output dir"; poweroff -f; }
umount /proc /sys; mount --move /dev /newroot/dev
exec switch_root /newroot /bin/bash /mnt/stage2.sh
EOF
chmod +x "$VM/initramfs/init"
(cd "$VM/initramfs" && find . | cpio -o -H newc --quiet | gzip -1) > "$VM/initramfs.gz"

# stage2 runs on the host's root, read-only: tmpfs for what is written,
# the kernel's modules, cgroup v2 only, then the tests.
out=$VM/out
rm -rf "$out" && mkdir -p "$out"
test_bin=$out/e2e.test
CGO_ENABLED=0 go test -c -o "$test_bin" ./e2e
cat > "$out/stage2.sh" <<EOF
set -u
mount -t proc proc /proc; mount -t sysfs sys /sys
grep -E " (/|/proc|/sys) " /proc/mounts
for d in /run /var/tmp /var/lib /root; do mount -t tmpfs -o mode=0755 tmpfs \$d; done
mkdir -p /dev/pts /dev/shm /dev/mqueue
# The kernel's modules are not under /lib/modules of this root: modprobe,
# the kernel's own requests included, looks in the unpacked package.
printf '#!/bin/sh\nexec /usr/sbin/modprobe -d $VM/k "\$@"\n' > /run/modprobe
chmod +x /run/modprobe
echo /run/modprobe > /proc/sys/kernel/modprobe
/run/modprobe -a loop ext4
# /tmp on ext4 (in memory): idmapped mounts, which runc's user namespace
# needs, come to tmpfs only in Linux 6.3.
truncate -s 24G /run/tmp.img && mkfs.ext4 -q /run/tmp.img && mount -o loop /run/tmp.img /tmp
chmod 1777 /tmp /var/tmp
mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm; mount -t mqueue mqueue /dev/mqueue
mount -t cgroup2 none /sys/fs/cgroup
echo "+cpu +memory +pids +io" > /sys/fs/cgroup/cgroup.subtree_control
mount -t securityfs none /sys/kernel/security 2>/dev/null
/run/modprobe -a overlay veth nf_tables nft_chain_nat nft_masq nft_ct nft_reject_inet fuse tun 2>&1 | head -5
ip link set lo up
echo 1 > /proc/sys/net/ipv4/ip_forward
echo "vm: kernel \$(uname -r), cgroup \$(stat -fc %T /sys/fs/cgroup), controllers: \$(cat /sys/fs/cgroup/cgroup.controllers)"
mkdir -p /tmp/images
for i in busybox base; do [ -d $WARREN_TEST_IMAGE_DIR/\$i ] && cp -a $WARREN_TEST_IMAGE_DIR/\$i /tmp/images/; done
cd $(pwd)/e2e
export HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export WARREN_TEST_SLOW=1 WARREN_BIN=$WARREN_BIN WARREN_RUNSC=$WARREN_RUNSC WARREN_TEST_IMAGE_DIR=/tmp/images WARREN_DNS_UPSTREAM=127.0.0.1:53
/mnt/e2e.test -test.run '$TESTS' -test.v -test.timeout 60m > /mnt/test.log 2>&1
echo \$? > /mnt/rc
sync
/bin/busybox poweroff -f
EOF

echo "vm: booting $kver with cgroup v2 only (emulated: this takes a while)"
rm -f "$out/rc"
timeout 75m qemu-system-x86_64 -machine q35 -cpu max -smp 2 -m 6G -nographic -no-reboot -nic none \
	-kernel "$VM/k/boot/vmlinuz-$kver" -initrd "$VM/initramfs.gz" \
	-append "console=ttyS0 quiet panic=-1 rdinit=/init systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all" \
	-virtfs local,path=/,mount_tag=hostroot,security_model=passthrough,readonly=on,multidevs=remap \
	-virtfs local,path="$out",mount_tag=out,security_model=passthrough \
	> "$VM/console.log" 2>&1 || true
grep "^vm:" "$VM/console.log" || true
if [ ! -f "$out/rc" ]; then
	echo "vm: the tests did not finish; console:"
	tail -40 "$VM/console.log"
	exit 1
fi
grep -E "^(=== RUN|--- |\s+--- |PASS|FAIL|ok)" "$out/test.log" || true
rc=$(cat "$out/rc")
if [ "$rc" != 0 ]; then
	tail -80 "$out/test.log"
fi
exit "$rc"
