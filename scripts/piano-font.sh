#!/usr/bin/env bash
# Rebuild etude's bundled piano, assets/piano/etude-piano.sf2, from FluidR3_GM.sf2: its preset 0
# of bank 0 (Yamaha Grand Piano) alone, byte for byte what is committed (tests/piano_font.rs checks
# the same). The source is the argument, else /usr/share/sounds/sf2/FluidR3_GM.sf2 (Debian's
# fluid-soundfont-gm), else Debian's package fluid-soundfont-gm 3.1-5.3, downloaded and unpacked
# into a temporary folder. The source must have the sha256 the font was built from.
#   scripts/piano-font.sh [FluidR3_GM.sf2]
set -euo pipefail
cd "$(dirname "$0")/.."

SHA=74594e8f4250680adf590507a306655a299935343583256f3b722c48a1bc1cb0
DEB=https://deb.debian.org/debian/pool/main/f/fluid-soundfont/fluid-soundfont-gm_3.1-5.3_all.deb
OUT=assets/piano/etude-piano.sf2

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
src="${1:-/usr/share/sounds/sf2/FluidR3_GM.sf2}"
if [ ! -f "$src" ]; then
    echo "piano-font: $src is missing; downloading $DEB" >&2
    curl -fsSL -o "$tmp/fluid.deb" "$DEB"
    # A .deb is an ar archive; its data.tar.* holds the font (dpkg-deb where there is one).
    if command -v dpkg-deb >/dev/null 2>&1; then
        dpkg-deb -x "$tmp/fluid.deb" "$tmp/x"
    else
        (cd "$tmp" && ar x fluid.deb && mkdir x && tar -xf data.tar.* -C x)
    fi
    src="$tmp/x/usr/share/sounds/sf2/FluidR3_GM.sf2"
fi
echo "$SHA  $src" | sha256sum -c --quiet - || {
    echo "piano-font: $src is not the FluidR3_GM.sf2 of fluid-soundfont-gm 3.1-5.3 (sha256 $SHA)" >&2
    exit 1
}
# Built by rustc alone (std only), not through the library: the library embeds the font.
rustc --edition 2021 -O -o "$tmp/piano_font" examples/piano_font.rs
"$tmp/piano_font" "$src" "$OUT"
sha256sum "$OUT"
