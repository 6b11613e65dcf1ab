#!/usr/bin/env bash
# The project's test command. Installs what the tests need when it is missing (Mesa's lavapipe,
# the software Vulkan driver the GPU tests run on, and Chromium, which opens the run report in
# tests/report_browser.rs, and Debian's fluid-soundfont-gm, the source of the bundled piano that
# tests/piano_font.rs rebuilds; with sudo when not root), then runs `cargo test`.
# Extra arguments go to cargo test: scripts/test.sh --test midi_read
set -euo pipefail
cd "$(dirname "$0")/.."

have_lavapipe() {
    compgen -G "/usr/share/vulkan/icd.d/lvp_icd*.json" >/dev/null &&
        { ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1' || compgen -G "/usr/lib/*/libvulkan.so.1" >/dev/null; }
}

have_chromium() {
    [ -n "${ETUDE_CHROMIUM:-}" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 ||
        command -v google-chrome >/dev/null 2>&1 || command -v google-chrome-stable >/dev/null 2>&1
}

have_fluid() {
    [ -n "${ETUDE_FLUID_SF2:-}" ] || [ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ]
}

# What is missing: lavapipe for the GPU tests, Chromium for the report's browser test, FluidR3_GM
# for tests/piano_font.rs (the bundled piano is rebuilt from it).
missing=()
have_lavapipe || missing+=(mesa-vulkan-drivers)
have_chromium || missing+=(chromium)
have_fluid || missing+=(fluid-soundfont-gm)
if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "scripts/test.sh: missing ${missing[*]} and no apt-get; install them by hand (Mesa's Vulkan drivers, Chromium, FluidR3_GM.sf2 as ETUDE_FLUID_SF2)" >&2
        exit 1
    fi
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "scripts/test.sh: installing ${missing[*]} needs root or sudo" >&2
        exit 1
    fi
    echo "scripts/test.sh: installing ${missing[*]} (lavapipe for the GPU tests, chromium for the report test, fluid-soundfont-gm for the piano font test)" >&2
    "${SUDO[@]}" apt-get update
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi

# Mesa's device-select layer complains without a runtime dir; Debian 12's validation layers are older
# than the SPIR-V naga emits and report false errors.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "${XDG_RUNTIME_DIR}" ]; then
    XDG_RUNTIME_DIR="$(mktemp -d)"
    export XDG_RUNTIME_DIR
fi
export WGPU_VALIDATION=0

# cargo prints one "test result" line per test binary; the last one is often a binary with no test
# (doc-tests), so close with the totals over all of them.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test "$@" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
