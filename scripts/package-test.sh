#!/usr/bin/env bash
# The Debian package as an admin meets it (run by scripts/test.sh; as root, on a machine
# where postern is not installed otherwise): build it, install it with dpkg -i, check
# that every file is where it belongs and that the shipped configuration is refused only
# for its __CHANGEME__ keys, run `posternd selftest`, purge it, and check that nothing
# of it is left. It never starts posternd on the host and never touches the host's
# firewall: the self-test and the configuration check run in network namespaces.
#   ./scripts/package-test.sh
#   NO_BUILD=1 ./scripts/package-test.sh   # package target/release as it is
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }
fail() {
    printf 'package test FAILED: %s\n' "$*" >&2
    exit 1
}

if dpkg-query -W -f='${Status}' postern 2>/dev/null | grep -q 'ok installed\|config-files'; then
    if [ "${CI:-}" = true ]; then
        say "purging a postern package left by an earlier run"
        dpkg --purge postern >/dev/null
    else
        fail "postern is installed on this machine: this test would purge it (and its /etc/postern); run it where postern is not installed, or purge it first"
    fi
fi

ns="postern-pkg-$$"
work=$(mktemp -d)
installed=0
cleanup() {
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
    # A failure after the install must not leave the package behind.
    if [ "$installed" = 1 ] && dpkg-query -W -f='${Status}' postern 2>/dev/null | grep -q 'ok installed\|config-files'; then
        dpkg --purge postern >/dev/null 2>&1 || true
    fi
}
trap cleanup EXIT

start=$(date +%s)
deb=$(scripts/package.sh | tail -n 1)
[ -f "$deb" ] || fail "scripts/package.sh made no package"
built=$(date +%s)
say "built $deb ($(du -k "$deb" | cut -f1) KiB) in $((built - start)) s"

if command -v lintian >/dev/null; then
    say "lintian"
    lintian --allow-root --pedantic "$deb" >"$work/lintian.log" 2>&1 || true
    cat "$work/lintian.log"
    if grep -E '^(E|W): ' "$work/lintian.log" | grep -qv 'spelling-error-in-binary'; then
        fail "lintian has errors or warnings (above)"
    fi
fi


say "dpkg -i"
installed=1
dpkg -i "$deb" >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; fail "dpkg -i $deb"; }
cat "$work/install.log"
grep -q 'posternd is enabled but not started: set the keys' "$work/install.log" \
    || fail "postinst did not say that posternd waits for its keys"
dpkg-query -L postern | sort >"$work/files"

say "installed files"
unit=/lib/systemd/system/posternd.service
[ -f "$unit" ] || unit=/usr/lib/systemd/system/posternd.service
for f in /usr/bin/postern /usr/sbin/posternd "$unit" /usr/lib/sysusers.d/postern.conf \
    /etc/postern/fwknopd.conf /etc/postern/access.conf \
    /usr/share/man/man1/postern.1.gz /usr/share/man/man8/posternd.8.gz \
    /usr/share/man/man5/posternd.conf.5.gz /usr/share/man/man5/postern-access.conf.5.gz \
    /usr/share/bash-completion/completions/postern /usr/share/bash-completion/completions/posternd \
    /usr/share/zsh/vendor-completions/_postern /usr/share/zsh/vendor-completions/_posternd \
    /usr/share/fish/vendor_completions.d/postern.fish /usr/share/fish/vendor_completions.d/posternd.fish \
    /usr/share/doc/postern/README.md /usr/share/doc/postern/copyright \
    /etc/fail2ban/filter.d/posternd.conf /etc/fail2ban/jail.d/posternd.conf \
    /etc/logcheck/ignore.d.server/posternd /etc/logcheck/violations.d/posternd; do
    [ -f "$f" ] || fail "$f is missing"
done
cmp -s "$unit" dist/posternd.service || fail "$unit differs from dist/posternd.service"
[ "$(stat -c %a /etc/postern/access.conf)" = 600 ] || fail "/etc/postern/access.conf is not mode 0600"
[ "$(stat -c %a:%U /var/lib/postern)" = 700:root ] || fail "/var/lib/postern is not 0700 root"
getent passwd postern >/dev/null || fail "no postern user"
[ -L /etc/systemd/system/multi-user.target.wants/posternd.service ] || fail "posternd.service is not enabled"
for c in /etc/postern/fwknopd.conf /etc/postern/access.conf; do
    dpkg-query -W -f='${Conffiles}\n' postern | grep -q " $c " || fail "$c is not a conffile"
done
for page in /usr/share/man/man*/postern*.gz; do
    out=$(zcat "$page" | groff -man -Tutf8 -ww -z 2>&1) || fail "$page does not render"
    [ -z "$out" ] || fail "$page: groff warns: $out"
done
bash -n /usr/share/bash-completion/completions/posternd || fail "the bash completion does not parse"
/usr/sbin/posternd --version >/dev/null && /usr/bin/postern --version >/dev/null \
    || fail "the installed binaries do not run"

say "the shipped configuration: refused for its __CHANGEME__ keys, and only for them"
ip netns add "$ns"
set +e
ip netns exec "$ns" /usr/sbin/posternd --check-config >"$work/check.log" 2>&1
rc=$?
set -e
cat "$work/check.log"
[ "$rc" = 1 ] || fail "posternd --check-config of the shipped configuration exited $rc, not 1"
grep -q '^configuration error' "$work/check.log" || fail "--check-config printed no error"
if grep '^configuration error' "$work/check.log" | grep -qv '__CHANGEME__'; then
    fail "the shipped configuration has an error other than its __CHANGEME__ keys"
fi
ip netns del "$ns"

say "posternd selftest"
/usr/sbin/posternd selftest | tee "$work/selftest.log" || fail "posternd selftest failed"
grep -q "^selftest: .* as $unit runs it" "$work/selftest.log" \
    || fail "the selftest did not use the installed unit ($unit)"

say "dpkg --purge"
dpkg --purge postern 2>&1 | tee "$work/purge.log"
dpkg-query -W -f='${Status}' postern 2>/dev/null | grep -q 'ok installed' && fail "postern is still installed"
left=()
while read -r f; do
    # Directories shared with other packages stay; nothing of postern's may.
    if [ -e "$f" ] && ! [ -d "$f" ]; then left+=("$f"); fi
    if [ -d "$f" ] && [[ "$f" == */postern* ]]; then left+=("$f"); fi
done <"$work/files"
for f in /etc/postern /var/lib/postern /run/postern \
    /etc/systemd/system/multi-user.target.wants/posternd.service \
    /var/lib/systemd/deb-systemd-helper-enabled/posternd.service.dsh-also \
    /var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/posternd.service; do
    if [ -e "$f" ] || [ -L "$f" ]; then left+=("$f"); fi
done
[ ${#left[@]} -eq 0 ] || fail "left after purge: ${left[*]}"
grep -q "removed /var/lib/postern" "$work/purge.log" || fail "the purge did not say what it removed"
getent passwd postern >/dev/null && echo "the system user 'postern' stays after purge, as Debian does for system users"
say "package test passed ($(($(date +%s) - start)) s, of which $((built - start)) s to build)"
