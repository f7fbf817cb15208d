#!/usr/bin/env bash
# make install / make uninstall: warren and runsc into BINDIR, the systemd
# unit into UNITDIR, a config into SYSCONFDIR/warren (yours is kept).
# Every file and directory installed is recorded (files with their hash)
# in a manifest; uninstall removes exactly those, and of the files only
# the ones still as installed: a config you edited, a runsc that was there
# before, and the data dir stay.
set -euo pipefail

: "${BINDIR:?}" "${UNITDIR:?}" "${SYSCONFDIR:?}" "${STATEDIR:?}" "${DATADIR:?}"
DESTDIR=${DESTDIR:-}
MANIFEST=$DATADIR/warren/installed
CONFIG=$SYSCONFDIR/warren/warren.toml
records=()

hash() { sha256sum "$1" | cut -d' ' -f1; }

# recorded PATH: the hash the last install recorded for PATH, if any.
recorded() {
	[ -f "$DESTDIR$MANIFEST" ] || return 0
	awk -v p="$1" '$1 != "dir" && $2 == p { print $1 }' "$DESTDIR$MANIFEST"
}

# mkdirs DIR: create DIR's missing directories, recording each.
mkdirs() {
	local d=$1 missing=()
	while [ ! -d "$DESTDIR$d" ]; do
		missing=("$d" ${missing[@]+"${missing[@]}"})
		d=$(dirname "$d")
	done
	for d in ${missing[@]+"${missing[@]}"}; do
		mkdir -m 0755 "$DESTDIR$d"
		records+=("dir $d")
	done
}

# place SRC DST MODE [keep]: install SRC at DST. With keep, a DST that an
# install of warren did not put there is left alone, and said so.
place() {
	local src=$1 dst=$2 mode=$3 keep=${4:-}
	if [ -n "$keep" ] && [ -e "$DESTDIR$dst" ] && [ -z "$(recorded "$dst")" ]; then
		echo "install: keeping $dst, which warren did not install"
		return
	fi
	mkdirs "$(dirname "$dst")"
	install -m "$mode" "$src" "$DESTDIR$dst"
	records+=("$(hash "$DESTDIR$dst") $dst")
	echo "install: $dst"
}

render() {
	sed -e "s|@BINDIR@|$BINDIR|g" -e "s|@SYSCONFDIR@|$SYSCONFDIR|g" -e "s|@STATEDIR@|$STATEDIR|g" "$1" > "$2"
}

systemd_here() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

do_install() {
	: "${BIN:?}" "${RUNSC:?}"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	# Directories an earlier install made stay recorded.
	if [ -f "$DESTDIR$MANIFEST" ]; then
		while read -r kind path; do
			[ "$kind" = dir ] && records+=("dir $path")
		done < "$DESTDIR$MANIFEST"
	fi
	render dist/warren.service "$tmp/warren.service"
	render dist/warren.toml "$tmp/warren.toml"
	place "$BIN" "$BINDIR/warren" 0755
	# The agent alone, which sandboxes start faster with (warren falls
	# back to itself without it).
	if [ -n "${AGENT:-}" ]; then
		place "$AGENT" "$BINDIR/warren-agent" 0755
	fi
	# runsc from PATH may already be the one in BINDIR.
	if [ "$(realpath "$RUNSC")" != "$(realpath -m "$DESTDIR$BINDIR/runsc")" ]; then
		place "$RUNSC" "$BINDIR/runsc" 0755 keep
	fi
	place "$tmp/warren.service" "$UNITDIR/warren.service" 0644
	local was
	was=$(recorded "$CONFIG")
	if [ -e "$DESTDIR$CONFIG" ] && [ -n "$was" ] && [ "$was" != "$(hash "$DESTDIR$CONFIG")" ]; then
		echo "install: keeping $CONFIG (changed since it was installed)"
		records+=("$was $CONFIG")
	else
		place "$tmp/warren.toml" "$CONFIG" 0640 keep
	fi
	mkdirs "$(dirname "$MANIFEST")"
	printf '%s\n' "${records[@]}" > "$DESTDIR$MANIFEST"
	if systemd_here; then
		systemctl daemon-reload
		echo "install: done; start it with: systemctl enable --now warren"
	else
		echo "install: done; run: $BINDIR/warren serve --config $CONFIG"
	fi
	"$DESTDIR$BINDIR/warren" doctor --brief --config "$DESTDIR$CONFIG" ||
		echo "install: warren doctor found problems (above); warren will not serve until they are fixed"
}

do_uninstall() {
	if [ ! -f "$DESTDIR$MANIFEST" ]; then
		echo "uninstall: no $MANIFEST; nothing was removed"
		return
	fi
	if systemd_here; then
		systemctl disable --now warren 2>/dev/null || true
	fi
	local dirs=()
	while read -r kind path; do
		if [ "$kind" = dir ]; then
			dirs=("$path" ${dirs[@]+"${dirs[@]}"})
			continue
		fi
		[ -e "$DESTDIR$path" ] || continue
		if [ "$(hash "$DESTDIR$path")" != "$kind" ]; then
			echo "uninstall: keeping $path (changed since it was installed)"
			continue
		fi
		rm -f "$DESTDIR$path"
		echo "uninstall: removed $path"
	done < "$DESTDIR$MANIFEST"
	rm -f "$DESTDIR$MANIFEST"
	# Deepest first; a directory that holds anything else stays.
	for d in $(printf '%s\n' ${dirs[@]+"${dirs[@]}"} | awk '{ print length, $0 }' | sort -rn | cut -d' ' -f2-); do
		rmdir "$DESTDIR$d" 2>/dev/null || true
	done
	if systemd_here; then
		systemctl daemon-reload
	fi
	echo "uninstall: done; the data in $STATEDIR is yours to keep or remove"
}

case ${1:-} in
install) do_install ;;
uninstall) do_uninstall ;;
*)
	echo "usage: $0 install|uninstall" >&2
	exit 2
	;;
esac
