#!/usr/bin/env bash
# Checks what a user of the installed library sees: `meson install` puts the
# headers (normkit.h and the generated normkit_version.h), both libraries and
# normkit.pc in place, the README example builds with pkg-config against them,
# the library's nk_version_number() matches pkg-config's version, and normkit
# works as a Meson subproject.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

meson setup "$tmp/build" "$root" --prefix=/usr -Dtests=disabled -Dbench=disabled >/dev/null
ninja -C "$tmp/build" >/dev/null
DESTDIR="$tmp/dest" meson install -C "$tmp/build" --quiet
pcdir=$(dirname "$(find "$tmp/dest" -name normkit.pc | head -n 1)")
for f in usr/include/normkit.h usr/include/normkit_version.h; do test -f "$tmp/dest/$f"; done
ls "$tmp/dest"/usr/lib/*/libnormkit.a "$tmp/dest"/usr/lib/*/libnormkit.so >/dev/null
# soname carries the 0.x series only (see meson.build)
soname=$(readelf -d "$tmp"/dest/usr/lib/*/libnormkit.so | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[ "$soname" = libnormkit.so.0 ] || { echo "error: soname '$soname', expected libnormkit.so.0" >&2; exit 1; }
# normkit-isa is installed, the development tools are not
test -x "$tmp/dest/usr/bin/normkit-isa"
for t in normkit-seeds normkit-speed; do
  [ ! -e "$tmp/dest/usr/bin/$t" ] || { echo "error: $t must not be installed" >&2; exit 1; }
done

export PKG_CONFIG_PATH="$pcdir" PKG_CONFIG_SYSROOT_DIR="$tmp/dest"
cc -std=c11 -Werror -o "$tmp/example" "$root/tests/readme_example.c" $(pkg-config --cflags --libs normkit)
libdir=$(dirname "$(ls "$tmp"/dest/usr/lib/*/libnormkit.so)")
LD_LIBRARY_PATH=$libdir "$tmp/example"
echo "install + pkg-config: ok"

# the version the installed library reports is the one normkit.pc declares
cat > "$tmp/version.c" <<'C'
#include <stdio.h>
#include <normkit.h>
int main(void)
{
    printf("%d %s\n", nk_version_number(), nk_version());
    return nk_version_number() != NK_VERSION_NUMBER;
}
C
cc -std=c11 -Werror -o "$tmp/version" "$tmp/version.c" $(pkg-config --cflags --libs normkit)
pcver=$(pkg-config --modversion normkit)
IFS=. read -r major minor patch <<<"$pcver"
want="$((major * 10000 + minor * 100 + patch)) $pcver"
got=$(LD_LIBRARY_PATH=$libdir "$tmp/version")
if [ "$got" != "$want" ]; then
  echo "error: library reports '$got', normkit.pc says '$want'" >&2
  exit 1
fi
echo "version $pcver ($want): ok"

mkdir -p "$tmp/sub/subprojects"
ln -s "$root" "$tmp/sub/subprojects/normkit"
cp "$root/tests/readme_example.c" "$tmp/sub/main.c"
cat > "$tmp/sub/meson.build" <<'MESON'
project('normkit-user', 'c', default_options : ['c_std=c11'])
normkit = dependency('normkit', fallback : ['normkit', 'normkit_dep'],
  default_options : ['tests=disabled', 'bench=disabled'])
executable('user', 'main.c', dependencies : normkit)
MESON
meson setup "$tmp/sub/build" "$tmp/sub" --wrap-mode=forcefallback >/dev/null
ninja -C "$tmp/sub/build" >/dev/null
"$tmp/sub/build/user"
echo "meson subproject: ok"
