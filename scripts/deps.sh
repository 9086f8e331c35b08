#!/usr/bin/env bash
# Install what postern's build, demo and tests need on Debian 12 (sourced by demo.sh
# and test.sh; safe to run again).
set -euo pipefail
if [ "$(id -u)" -ne 0 ]; then
    echo "run as root (apt installs, network namespaces, nftables)" >&2
    exit 1
fi
pkgs=(fwknop-client fwknop-server nftables iptables iproute2 python3 systemd systemd-container build-essential pkg-config ca-certificates curl redis-server redis-tools ipset openssl firewalld tcpdump python3-aiosmtpd groff-base lintian)
# python3-aiosmtpd: the alert tests' SMTP server (Debian's /usr/bin/python3 has it).
# groff-base, lintian: the man page checks and the package test (scripts/package-test.sh).
# firewalld: its tests run their own firewalld in a namespace, on a bus of their own. Masked
# before its first install (as `systemctl mask` does), so that the package never enables or
# starts it on this host, where it would take over the firewall.
# redis-server likewise: the fleet tests start their own, on namespace addresses.
for unit in firewalld redis-server; do
    if ! dpkg-query -W -f='${Status}' "$unit" 2>/dev/null | grep -q 'install ok installed' \
        && [ ! -e "/etc/systemd/system/$unit.service" ]; then
        mkdir -p /etc/systemd/system
        ln -s /dev/null "/etc/systemd/system/$unit.service"
    fi
done
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# fail2ban's own fail2ban-regex checks the shipped filter against real log lines. Unpacked,
# not installed: the package would start fail2ban on this host, with its default sshd jail.
F2B=/opt/postern-test/fail2ban
if [ ! -x "$F2B/usr/bin/fail2ban-regex" ]; then
    echo "==> unpacking fail2ban (for fail2ban-regex) into $F2B"
    tmp=$(mktemp -d)
    (cd "$tmp" && { apt-get download -qq fail2ban 2>/dev/null \
        || { apt-get update -qq && apt-get download -qq fail2ban 2>/dev/null; }; })
    mkdir -p "$F2B"
    dpkg -x "$tmp"/fail2ban_*.deb "$F2B"
    rm -rf "$tmp"
fi
if ! command -v cargo >/dev/null; then
    if [ ! -x "$HOME/.cargo/bin/cargo" ]; then
        echo "==> installing Rust (rustup)"
        curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
    fi
    export PATH="$HOME/.cargo/bin:$PATH"
fi
# The worker's own system user (what the Debian package's sysusers.d entry creates), so
# that no other service's processes can signal it.
if ! getent passwd postern >/dev/null; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postern
fi
