#!/usr/bin/env bash
# Installs what warren needs on a Debian/Ubuntu host, idempotently:
# apt packages, and a runsc that can run networked sandboxes (a probed one
# from PATH, or one built from the pinned gVisor version into the cache).
set -euo pipefail

: "${RUNSC_VERSION:?}" "${RUNSC:?}"
CACHE=$(dirname "$(dirname "$(dirname "$RUNSC")")")
mkdir -p "$CACHE"

need=()
# python3-*: the Python SDK and its tests; chromium: the TypeScript SDK in a
# browser; postgresql: the store tests and the cluster suite (warren itself
# needs none unless --store names one); nodejs/npm only where no node is.
pkgs=(runc busybox-static debootstrap iproute2 nftables git ca-certificates tmux e2fsprogs lxcfs jq
	python3-httpx python3-websockets python3-pytest chromium postgresql)
command -v node >/dev/null || pkgs+=(nodejs npm)
for pkg in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
	echo "deps: installing ${need[*]}"
	if [ "$(id -u)" != 0 ]; then SUDO=sudo; else SUDO=; fi
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# probe RUNSC_BIN: can it boot a sandbox with its own network stack?
probe() {
	local bin=$1 dir
	dir=$(mktemp -d)
	trap 'umount "$dir/state/null-netns" 2>/dev/null; rm -rf "$dir"' RETURN
	mkdir -p "$dir/rootfs/bin" "$dir/rootfs/proc" "$dir/rootfs/dev" "$dir/rootfs/sys"
	cp "$(command -v busybox)" "$dir/rootfs/bin/busybox"
	(cd "$dir" && "$bin" spec -- /bin/busybox true) >/dev/null 2>&1 || return 1
	sed -i 's/"terminal": true/"terminal": false/' "$dir/config.json"
	timeout 60 "$bin" --root "$dir/state" --platform=systrap --network=sandbox run --bundle "$dir" "probe-$$" >/dev/null 2>&1
}

# The path is recorded resolved: a checkout may reach the cache through a
# link.
if [ -x "$RUNSC" ]; then
	realpath "$RUNSC" > "$CACHE/runsc-path"
elif command -v runsc >/dev/null && probe "$(command -v runsc)"; then
	echo "deps: using $(command -v runsc) (probe passed)"
	command -v runsc > "$CACHE/runsc-path"
else
	echo "deps: building runsc $RUNSC_VERSION (about 5 minutes, once; cached in $(dirname "$RUNSC"))"
	tmp=$(mktemp -d)
	CGO_ENABLED=0 GOBIN="$tmp" go install "gvisor.dev/gvisor/runsc@$RUNSC_VERSION"
	mkdir -p "$(dirname "$RUNSC")"
	mv "$tmp/runsc" "$RUNSC"
	rm -rf "$tmp"
	probe "$RUNSC" || { echo "deps: the built runsc failed its probe" >&2; exit 1; }
	realpath "$RUNSC" > "$CACHE/runsc-path"
fi
