#!/usr/bin/env bash
# The unit tests as an unprivileged user (nobody), as a developer without
# root runs them: every package's tests pass, and the root-only e2e suite
# skips with its reason instead of failing. The caller builds the test
# binaries; nobody runs each from its package's directory.
set -euo pipefail
bins=$(mktemp -d)
chmod 755 "$bins"
trap 'rm -rf "$bins"' EXIT
# One binary per package with tests, named by its import path: two
# packages may share a last element.
binof() { echo "$bins/$(tr / _ <<<"$1").test"; }
export -f binof
export bins
go list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./... | grep . |
	xargs -P "$(nproc)" -I{} bash -c 'go test -c -o "$(binof {})" {} >/dev/null'
status=0
while read -r dir path; do
	bin=$(binof "$path")
	[ -f "$bin" ] || continue
	if ! out=$(cd "$dir" && setpriv --reuid=nobody --regid=nogroup --clear-groups --reset-env \
		env PATH=/usr/sbin:/usr/bin:/sbin:/bin "$bin" 2>&1); then
		echo "$out"
		echo "FAIL	$path (as nobody)"
		status=1
		continue
	fi
	case $path in
	*/e2e)
		grep -q "skipped" <<<"$out" || { echo "$out"; echo "FAIL	$path: no skip reason (as nobody)"; status=1; continue; }
		echo "skip	$path (as nobody): $(grep skipped <<<"$out")"
		;;
	*) echo "ok	$path (as nobody)" ;;
	esac
done < <(go list -f '{{.Dir}} {{.ImportPath}}' ./...)
exit $status
