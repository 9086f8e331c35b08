#!/usr/bin/env bash
# Build the Debian package target/debian/postern_<version>_<arch>.deb: postern and
# posternd (release builds), the unit, the worker's system user (sysusers.d),
# /etc/postern with keys to set, man pages, completions, README and copyright. The
# contents are described in crates/daemon/Cargo.toml ([package.metadata.deb], read by
# cargo-deb); the maintainer scripts are dist/debian/{postinst,prerm,postrm}.
#   ./scripts/package.sh                # build, print the package's path
#   NO_BUILD=1 ./scripts/package.sh     # reuse target/release as it is
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    echo "==> installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release --locked -p postern -p posternd --bins
fi

version=$(./target/release/posternd --version | awk '{print $2}')
arch=$(dpkg --print-architecture)
assets=target/debian-assets
rm -rf "$assets"
mkdir -p "$assets" target/debian

# Man pages as committed (a test keeps them equal to what the flags generate), gzipped
# reproducibly.
for page in doc/man/*.[1-8]; do
    gzip -9n -c "$page" >"$assets/$(basename "$page").gz"
done

# The package's changelog (a native package: changelog.gz): this version, dated by the
# last commit.
when=$(git log -1 --format=%cD 2>/dev/null || date -R)
cat >"$assets/changelog" <<CHANGELOG
postern ($version) unstable; urgency=medium

  * Package of postern $version: the postern client, the posternd daemon and its
    systemd unit, the postern system user, /etc/postern examples, man pages and
    shell completions.

 -- postern developers <postern@example.invalid>  $when
CHANGELOG
gzip -9n "$assets/changelog"

deb="target/debian/postern_${version}_${arch}.deb"
rm -f "$deb"
# cargo-deb warns that the assets under target/debian-assets are not built by cargo:
# they are made above.
cargo deb -p posternd --no-build --output "$deb" 2>&1 >/dev/null \
    | grep -v "are detected as Cargo target dir" >&2 || true
[ -f "$deb" ] || { echo "cargo deb made no package" >&2; exit 1; }
echo "$deb"
