#compdef posternd

autoload -U is-at-least

_posternd() {
    typeset -A opt_args
    typeset -a _arguments_options
    local ret=1

    if is-at-least 5.2; then
        _arguments_options=(-s -S -C)
    else
        _arguments_options=(-s -C)
    fi

    local context curcontext="$curcontext" state line
    _arguments "${_arguments_options[@]}" : \
'-c+[fwknopd.conf to read]:FILE:_files' \
'--config-file=[fwknopd.conf to read]:FILE:_files' \
'-a+[access.conf to read]:FILE:_files' \
'--access-file=[access.conf to read]:FILE:_files' \
'-d+[Replay store (fwknopd'\''s digest.cache)]:FILE:_files' \
'--digest-file=[Replay store (fwknopd'\''s digest.cache)]:FILE:_files' \
'*-i+[Capture interface (repeat, or comma-separated; \`any\` for all)]:IFACE:_default' \
'*--interface=[Capture interface (repeat, or comma-separated; \`any\` for all)]:IFACE:_default' \
'--pcap-file=[Process the packets of a pcap capture file, then exit]:FILE:_files' \
'-r+[Run directory (pid file, replay store, control socket)]:DIR:_files' \
'--run-dir=[Run directory (pid file, replay store, control socket)]:DIR:_files' \
'-p+[Pid file]:FILE:_files' \
'--pid-file=[Pid file]:FILE:_files' \
'-P+[Capture filter (overrides PCAP_FILTER)\: \`udp port N\`, \`udp dst portrange A-B\`, \`\[src|dst\] host ADDR\`, \`\[src|dst\] net ADDR/LEN\`, ... with and/or/not and parentheses, as libpcap reads them (compiled into posternd'\''s kernel filter)]:EXPR:_default' \
'--pcap-filter=[Capture filter (overrides PCAP_FILTER)\: \`udp port N\`, \`udp dst portrange A-B\`, \`\[src|dst\] host ADDR\`, \`\[src|dst\] net ADDR/LEN\`, ... with and/or/not and parentheses, as libpcap reads them (compiled into posternd'\''s kernel filter)]:EXPR:_default' \
'-O+[Files whose directives replace fwknopd.conf'\''s (comma-separated; a later file wins; of several -O, the last counts, as with fwknopd)]:FILE[,FILE...]:_default' \
'--override-config=[Files whose directives replace fwknopd.conf'\''s (comma-separated; a later file wins; of several -O, the last counts, as with fwknopd)]:FILE[,FILE...]:_default' \
'--key-gen-file=[Write the generated keys to FILE (replaced; mode 0600) instead (implies --key-gen)]:FILE:_files' \
'--key-len=[Bytes of the generated encryption key (1-32; default 32)]:N:_default' \
'--hmac-key-len=[Bytes of the generated HMAC key (1-128; default 64)]:N:_default' \
'-l+[Accepted for fwknopd compatibility; posternd'\''s messages are not localised]:LOCALE:_default' \
'--locale=[Accepted for fwknopd compatibility; posternd'\''s messages are not localised]:LOCALE:_default' \
'-C+[Exit after N packets that passed the capture filter were processed (0\: no limit)]:N:_default' \
'--packet-limit=[Exit after N packets that passed the capture filter were processed (0\: no limit)]:N:_default' \
'--generate-completions=[Print the completion script for SHELL and exit]:SHELL:(bash zsh fish)' \
'--worker-program=[Internal, for tests\: start FILE (with posternd'\''s arguments and --worker) as the worker instead of posternd itself (the compromised-worker harness)]:FILE:_files' \
'-f[Stay in the foreground (logs to stderr)]' \
'--foreground[Stay in the foreground (logs to stderr)]' \
'-U[Receive SPA packets on a UDP socket instead of AF_PACKET]' \
'--udp-server[Receive SPA packets on a UDP socket instead of AF_PACKET]' \
'-t[Decide but change nothing (no firewall changes, no commands, no replay-store writes)]' \
'--test[Decide but change nothing (no firewall changes, no commands, no replay-store writes)]' \
'(-R --restart -S --status -D --dump-config)-K[Stop the running posternd]' \
'(-R --restart -S --status -D --dump-config)--kill[Stop the running posternd]' \
'(-S --status -D --dump-config)-R[Make the running posternd re-read its configuration]' \
'(-S --status -D --dump-config)--restart[Make the running posternd re-read its configuration]' \
'(-D --dump-config)-S[Show the status of the running posternd]' \
'(-D --dump-config)--status[Show the status of the running posternd]' \
'-D[Print the effective configuration (keys redacted) and exit]' \
'--dump-config[Print the effective configuration (keys redacted) and exit]' \
'--check-config[Check the configuration and exit\: 0 if it is usable, 1 if not]' \
'--fw-list[List the openings the firewall holds now (fwknopd'\''s --fw-list), and exit]' \
'--fw-list-all[List the backend and everything it holds (fwknopd'\''s --fw-list-all), and exit]' \
'--fw-flush[Close every opening the firewall holds now (fwknopd'\''s --fw-flush), and exit]' \
'--key-gen[Print a new encryption key and HMAC key for access.conf (KEY_BASE64\: ..., HMAC_KEY_BASE64\: ..., as fwknopd --key-gen prints them) and exit]' \
'--dump-serv-err-codes[Print the reasons posternd refuses a packet (the labels of its counters and logs\: posternd'\''s counterpart of fwknopd'\''s server error codes) and exit]' \
'--exit-parse-config[Parse the configuration and exit\: 0 if it is usable, 1 if not (fwknopd'\''s name for --check-config)]' \
'--exit-parse-digest-cache[Parse the configuration and the replay store (digest.cache), say what the store holds, and exit]' \
'--rotate-digest-cache[At start, rename the replay store (digest.cache) to \`<file>-old\` and begin a new one (packets stamped before the start are then refused for one age window)]' \
'*-v[More output]' \
'*--verbose[More output]' \
'--syslog-internal[Internal\: log to syslog (set when posternd detaches itself)]' \
'--generate-man[Print the man page and exit]' \
'--directives-table[Print the fwknopd.conf directive table of doc/configuration.md and exit]' \
'--worker[Internal\: run as the unprivileged worker (started by posternd itself)]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
":: :_posternd_commands" \
"*::: :->posternd" \
&& ret=0
    case $state in
    (posternd)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:posternd-command-$line[1]:"
        case $line[1] in
            (status)
_arguments "${_arguments_options[@]}" : \
'-c+[fwknopd.conf, to find the control socket]:FILE:_files' \
'--config-file=[fwknopd.conf, to find the control socket]:FILE:_files' \
'-r+[Run directory, to find the control socket]:DIR:_files' \
'--run-dir=[Run directory, to find the control socket]:DIR:_files' \
'--json[Print JSON instead of text]' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(selftest)
_arguments "${_arguments_options[@]}" : \
'--client=[The postern client to knock with (default\: \`postern\` next to posternd, on PATH, or /usr/bin/postern)]:FILE:_files' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
&& ret=0
;;
(setup)
_arguments "${_arguments_options[@]}" : \
'--from=[With --confirm\: the address the confirming connection comes from (default\: the client address in SSH_CONNECTION)]:ADDR:_default' \
'--confirm-within=[Roll everything back unless confirmed within SECONDS]:SECONDS:_default' \
'-c+[fwknopd.conf (the running posternd'\''s)]:FILE:_files' \
'--config-file=[fwknopd.conf (the running posternd'\''s)]:FILE:_files' \
'-r+[Run directory (the running posternd'\''s; the setup state goes in DIR/setup)]:DIR:_files' \
'--run-dir=[Run directory (the running posternd'\''s; the setup state goes in DIR/setup)]:DIR:_files' \
'--guardian-internal=[Internal\: be the guardian of the setup whose state is in DIR]:DIR:_files' \
'(--rollback --dry-run)--confirm[Keep the pending default-drop policy. Run it from a NEW connection that came in through a knock\: the connection'\''s source address (from SSH_CONNECTION, or --from) must hold a grant in the running posternd]' \
'(--confirm --dry-run)--rollback[Restore the ruleset saved before the pending setup, now]' \
'--dry-run[Print what setup would apply, and change nothing]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
":: :_posternd__subcmd__help_commands" \
"*::: :->help" \
&& ret=0

    case $state in
    (help)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:posternd-help-command-$line[1]:"
        case $line[1] in
            (status)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(selftest)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(setup)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
(help)
_arguments "${_arguments_options[@]}" : \
&& ret=0
;;
        esac
    ;;
esac
;;
        esac
    ;;
esac
}

(( $+functions[_posternd_commands] )) ||
_posternd_commands() {
    local commands; commands=(
'status:Show the running daemon'\''s counters and active grants' \
'selftest:Check, as root, that knocking works on this system, end to end' \
'setup:Apply the default-drop input policy without locking yourself out' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'posternd commands' commands "$@"
}
(( $+functions[_posternd__subcmd__help_commands] )) ||
_posternd__subcmd__help_commands() {
    local commands; commands=(
'status:Show the running daemon'\''s counters and active grants' \
'selftest:Check, as root, that knocking works on this system, end to end' \
'setup:Apply the default-drop input policy without locking yourself out' \
'help:Print this message or the help of the given subcommand(s)' \
    )
    _describe -t commands 'posternd help commands' commands "$@"
}
(( $+functions[_posternd__subcmd__help__subcmd__help_commands] )) ||
_posternd__subcmd__help__subcmd__help_commands() {
    local commands; commands=()
    _describe -t commands 'posternd help help commands' commands "$@"
}
(( $+functions[_posternd__subcmd__help__subcmd__selftest_commands] )) ||
_posternd__subcmd__help__subcmd__selftest_commands() {
    local commands; commands=()
    _describe -t commands 'posternd help selftest commands' commands "$@"
}
(( $+functions[_posternd__subcmd__help__subcmd__setup_commands] )) ||
_posternd__subcmd__help__subcmd__setup_commands() {
    local commands; commands=()
    _describe -t commands 'posternd help setup commands' commands "$@"
}
(( $+functions[_posternd__subcmd__help__subcmd__status_commands] )) ||
_posternd__subcmd__help__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'posternd help status commands' commands "$@"
}
(( $+functions[_posternd__subcmd__selftest_commands] )) ||
_posternd__subcmd__selftest_commands() {
    local commands; commands=()
    _describe -t commands 'posternd selftest commands' commands "$@"
}
(( $+functions[_posternd__subcmd__setup_commands] )) ||
_posternd__subcmd__setup_commands() {
    local commands; commands=()
    _describe -t commands 'posternd setup commands' commands "$@"
}
(( $+functions[_posternd__subcmd__status_commands] )) ||
_posternd__subcmd__status_commands() {
    local commands; commands=()
    _describe -t commands 'posternd status commands' commands "$@"
}

if [ "$funcstack[1]" = "_posternd" ]; then
    _posternd "$@"
else
    compdef _posternd posternd
fi
