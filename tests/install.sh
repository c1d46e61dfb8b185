#!/usr/bin/env bash
# `meson install` into a staging directory (as a distribution's packaging
# does) installs exactly what a packager expects: the header, libferry.so
# with its soname, ferry.pc, the two programs, their man pages and the
# licence; no tests, benchmarks or fuzzers. A small C program then builds
# against the installed header and library through pkg-config, and runs.
# Arguments: BUILD_DIR PREFIX BINDIR LIBDIR INCLUDEDIR MANDIR DATADIR; $CC.
set -uo pipefail
build=$1 prefix=$2
D=$(mktemp -d /tmp/ferry-install.XXXXXX)
trap 'rm -rf "$D"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
# A directory option is relative to the prefix unless it is absolute.
dir() { case $1 in /*) echo "$D$1" ;; *) echo "$D$prefix/$1" ;; esac; }
bindir=$(dir "$3") libdir=$(dir "$4") incdir=$(dir "$5") mandir=$(dir "$6") datadir=$(dir "$7")

meson install -C "$build" --destdir "$D" --no-rebuild --quiet >"$D.log" 2>&1 ||
	{ cat "$D.log" >&2; rm -f "$D.log"; fail "meson install failed"; }
rm -f "$D.log"

expected=$(printf '%s\n' "$bindir/ferry" "$bindir/ferry-vm" "$incdir/ferry.h" \
	"$libdir/libferry.so" "$libdir/libferry.so.1" "$libdir/libferry.so.1.0.0" \
	"$libdir/pkgconfig/ferry.pc" "$mandir/man1/ferry.1" "$mandir/man1/ferry-vm.1" \
	"$datadir/doc/ferry/LICENSE" | sort)
got=$(find "$D" -type f -o -type l | sort)
[ "$got" = "$expected" ] ||
	fail "installed files differ from what a packager expects:$(diff <(echo "$expected") <(echo "$got") | sed 's/^/  /')"
echo "ok: installed $(echo "$got" | wc -l) files: $(echo "$got" | sed "s|^$D||" | tr '\n' ' ')"

soname=$(readelf -d "$libdir/libferry.so.1.0.0" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libferry.so.1 ] || fail "soname is '$soname', not libferry.so.1"
[ "$(readlink "$libdir/libferry.so")" = libferry.so.1 ] || fail "libferry.so does not point to the soname"
echo "ok: soname $soname"

for page in ferry ferry-vm; do
	grep -q "^\.TH ${page^^} 1 " "$mandir/man1/$page.1" || fail "$page.1 is not a man page"
	grep -q '^\\fB\\-\\-help' "$mandir/man1/$page.1" ||
		grep -q '^\\fB\\-h, \\-\\-help' "$mandir/man1/$page.1" || fail "$page.1 lists no options"
done
grep -q '^\.SS migrate' "$mandir/man1/ferry.1" || fail "ferry.1 has no migrate section"
grep -q 'file:PATH' "$mandir/man1/ferry-vm.1" || fail "ferry-vm.1 does not mention file: snapshots"
echo "ok: man pages ferry(1) and ferry-vm(1)"

export PKG_CONFIG_PATH="$libdir/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$D"
flags=$(pkg-config --cflags --libs ferry) || fail "pkg-config does not find ferry"
[ "$(pkg-config --modversion ferry)" = 0.2.0 ] || fail "ferry.pc version $(pkg-config --modversion ferry)"
cat >"$D/use.c" <<'EOF'
#include <ferry.h>
#include <stdio.h>

int main(void)
{
	struct ferry_config cfg;

	ferry_config_init(&cfg);
	printf("%s %u\n", ferry_strerror(FERRY_ECANCELED), cfg.downtime_limit_ms);
	return 0;
}
EOF
# shellcheck disable=SC2086 # the flags are words
${CC:-cc} -Wall -Werror -o "$D/use" "$D/use.c" $flags || fail "a program does not build against the installed ferry ($flags)"
out=$(LD_LIBRARY_PATH="$libdir" "$D/use") || fail "the program does not run"
[ "$out" = "cancelled 300" ] || fail "the program printed '$out'"
echo "ok: a program built with pkg-config ($flags) runs: $out"
