# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_posternd_global_optspecs
    string join \n f/foreground c/config-file= a/access-file= d/digest-file= i/interface= U/udp-server pcap-file= t/test r/run-dir= p/pid-file= K/kill R/restart S/status D/dump-config check-config fw-list fw-list-all fw-flush P/pcap-filter= O/override-config= key-gen key-gen-file= key-len= hmac-key-len= dump-serv-err-codes exit-parse-config exit-parse-digest-cache l/locale= C/packet-limit= rotate-digest-cache v/verbose syslog-internal generate-man generate-completions= directives-table worker worker-program= h/help V/version
end

function __fish_posternd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_posternd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_posternd_using_subcommand
    set -l cmd (__fish_posternd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c posternd -n "__fish_posternd_needs_command" -s c -l config-file -d 'fwknopd.conf to read' -r -F
complete -c posternd -n "__fish_posternd_needs_command" -s a -l access-file -d 'access.conf to read' -r -F
complete -c posternd -n "__fish_posternd_needs_command" -s d -l digest-file -d 'Replay store (fwknopd\'s digest.cache)' -r -F
complete -c posternd -n "__fish_posternd_needs_command" -s i -l interface -d 'Capture interface (repeat, or comma-separated; `any` for all)' -r
complete -c posternd -n "__fish_posternd_needs_command" -l pcap-file -d 'Process the packets of a pcap capture file, then exit' -r -F
complete -c posternd -n "__fish_posternd_needs_command" -s r -l run-dir -d 'Run directory (pid file, replay store, control socket)' -r -F
complete -c posternd -n "__fish_posternd_needs_command" -s p -l pid-file -d 'Pid file' -r -F
complete -c posternd -n "__fish_posternd_needs_command" -s P -l pcap-filter -d 'Capture filter (overrides PCAP_FILTER): `udp port N`, `udp dst portrange A-B`, `[src|dst] host ADDR`, `[src|dst] net ADDR/LEN`, ... with and/or/not and parentheses, as libpcap reads them (compiled into posternd\'s kernel filter)' -r
complete -c posternd -n "__fish_posternd_needs_command" -s O -l override-config -d 'Files whose directives replace fwknopd.conf\'s (comma-separated; a later file wins; of several -O, the last counts, as with fwknopd)' -r
complete -c posternd -n "__fish_posternd_needs_command" -l key-gen-file -d 'Write the generated keys to FILE (replaced; mode 0600) instead (implies --key-gen)' -r -F
complete -c posternd -n "__fish_posternd_needs_command" -l key-len -d 'Bytes of the generated encryption key (1-32; default 32)' -r
complete -c posternd -n "__fish_posternd_needs_command" -l hmac-key-len -d 'Bytes of the generated HMAC key (1-128; default 64)' -r
complete -c posternd -n "__fish_posternd_needs_command" -s l -l locale -d 'Accepted for fwknopd compatibility; posternd\'s messages are not localised' -r
complete -c posternd -n "__fish_posternd_needs_command" -s C -l packet-limit -d 'Exit after N packets that passed the capture filter were processed (0: no limit)' -r
complete -c posternd -n "__fish_posternd_needs_command" -l generate-completions -d 'Print the completion script for SHELL and exit' -r -f -a "bash\t''
zsh\t''
fish\t''"
complete -c posternd -n "__fish_posternd_needs_command" -l worker-program -d 'Internal, for tests: start FILE (with posternd\'s arguments and --worker) as the worker instead of posternd itself (the compromised-worker harness)' -r -F
complete -c posternd -n "__fish_posternd_needs_command" -s f -l foreground -d 'Stay in the foreground (logs to stderr)'
complete -c posternd -n "__fish_posternd_needs_command" -s U -l udp-server -d 'Receive SPA packets on a UDP socket instead of AF_PACKET'
complete -c posternd -n "__fish_posternd_needs_command" -s t -l test -d 'Decide but change nothing (no firewall changes, no commands, no replay-store writes)'
complete -c posternd -n "__fish_posternd_needs_command" -s K -l kill -d 'Stop the running posternd'
complete -c posternd -n "__fish_posternd_needs_command" -s R -l restart -d 'Make the running posternd re-read its configuration'
complete -c posternd -n "__fish_posternd_needs_command" -s S -l status -d 'Show the status of the running posternd'
complete -c posternd -n "__fish_posternd_needs_command" -s D -l dump-config -d 'Print the effective configuration (keys redacted) and exit'
complete -c posternd -n "__fish_posternd_needs_command" -l check-config -d 'Check the configuration and exit: 0 if it is usable, 1 if not'
complete -c posternd -n "__fish_posternd_needs_command" -l fw-list -d 'List the openings the firewall holds now (fwknopd\'s --fw-list), and exit'
complete -c posternd -n "__fish_posternd_needs_command" -l fw-list-all -d 'List the backend and everything it holds (fwknopd\'s --fw-list-all), and exit'
complete -c posternd -n "__fish_posternd_needs_command" -l fw-flush -d 'Close every opening the firewall holds now (fwknopd\'s --fw-flush), and exit'
complete -c posternd -n "__fish_posternd_needs_command" -l key-gen -d 'Print a new encryption key and HMAC key for access.conf (KEY_BASE64: ..., HMAC_KEY_BASE64: ..., as fwknopd --key-gen prints them) and exit'
complete -c posternd -n "__fish_posternd_needs_command" -l dump-serv-err-codes -d 'Print the reasons posternd refuses a packet (the labels of its counters and logs: posternd\'s counterpart of fwknopd\'s server error codes) and exit'
complete -c posternd -n "__fish_posternd_needs_command" -l exit-parse-config -d 'Parse the configuration and exit: 0 if it is usable, 1 if not (fwknopd\'s name for --check-config)'
complete -c posternd -n "__fish_posternd_needs_command" -l exit-parse-digest-cache -d 'Parse the configuration and the replay store (digest.cache), say what the store holds, and exit'
complete -c posternd -n "__fish_posternd_needs_command" -l rotate-digest-cache -d 'At start, rename the replay store (digest.cache) to `<file>-old` and begin a new one (packets stamped before the start are then refused for one age window)'
complete -c posternd -n "__fish_posternd_needs_command" -s v -l verbose -d 'More output'
complete -c posternd -n "__fish_posternd_needs_command" -l syslog-internal -d 'Internal: log to syslog (set when posternd detaches itself)'
complete -c posternd -n "__fish_posternd_needs_command" -l generate-man -d 'Print the man page and exit'
complete -c posternd -n "__fish_posternd_needs_command" -l directives-table -d 'Print the fwknopd.conf directive table of doc/configuration.md and exit'
complete -c posternd -n "__fish_posternd_needs_command" -l worker -d 'Internal: run as the unprivileged worker (started by posternd itself)'
complete -c posternd -n "__fish_posternd_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c posternd -n "__fish_posternd_needs_command" -s V -l version -d 'Print version'
complete -c posternd -n "__fish_posternd_needs_command" -f -a "status" -d 'Show the running daemon\'s counters and active grants'
complete -c posternd -n "__fish_posternd_needs_command" -f -a "selftest" -d 'Check, as root, that knocking works on this system, end to end'
complete -c posternd -n "__fish_posternd_needs_command" -f -a "setup" -d 'Apply the default-drop input policy without locking yourself out'
complete -c posternd -n "__fish_posternd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c posternd -n "__fish_posternd_using_subcommand status" -s c -l config-file -d 'fwknopd.conf, to find the control socket' -r -F
complete -c posternd -n "__fish_posternd_using_subcommand status" -s r -l run-dir -d 'Run directory, to find the control socket' -r -F
complete -c posternd -n "__fish_posternd_using_subcommand status" -l json -d 'Print JSON instead of text'
complete -c posternd -n "__fish_posternd_using_subcommand status" -s h -l help -d 'Print help'
complete -c posternd -n "__fish_posternd_using_subcommand selftest" -l client -d 'The postern client to knock with (default: `postern` next to posternd, on PATH, or /usr/bin/postern)' -r -F
complete -c posternd -n "__fish_posternd_using_subcommand selftest" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c posternd -n "__fish_posternd_using_subcommand setup" -l from -d 'With --confirm: the address the confirming connection comes from (default: the client address in SSH_CONNECTION)' -r
complete -c posternd -n "__fish_posternd_using_subcommand setup" -l confirm-within -d 'Roll everything back unless confirmed within SECONDS' -r
complete -c posternd -n "__fish_posternd_using_subcommand setup" -s c -l config-file -d 'fwknopd.conf (the running posternd\'s)' -r -F
complete -c posternd -n "__fish_posternd_using_subcommand setup" -s r -l run-dir -d 'Run directory (the running posternd\'s; the setup state goes in DIR/setup)' -r -F
complete -c posternd -n "__fish_posternd_using_subcommand setup" -l guardian-internal -d 'Internal: be the guardian of the setup whose state is in DIR' -r -F
complete -c posternd -n "__fish_posternd_using_subcommand setup" -l confirm -d 'Keep the pending default-drop policy. Run it from a NEW connection that came in through a knock: the connection\'s source address (from SSH_CONNECTION, or --from) must hold a grant in the running posternd'
complete -c posternd -n "__fish_posternd_using_subcommand setup" -l rollback -d 'Restore the ruleset saved before the pending setup, now'
complete -c posternd -n "__fish_posternd_using_subcommand setup" -l dry-run -d 'Print what setup would apply, and change nothing'
complete -c posternd -n "__fish_posternd_using_subcommand setup" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c posternd -n "__fish_posternd_using_subcommand help; and not __fish_seen_subcommand_from status selftest setup help" -f -a "status" -d 'Show the running daemon\'s counters and active grants'
complete -c posternd -n "__fish_posternd_using_subcommand help; and not __fish_seen_subcommand_from status selftest setup help" -f -a "selftest" -d 'Check, as root, that knocking works on this system, end to end'
complete -c posternd -n "__fish_posternd_using_subcommand help; and not __fish_seen_subcommand_from status selftest setup help" -f -a "setup" -d 'Apply the default-drop input policy without locking yourself out'
complete -c posternd -n "__fish_posternd_using_subcommand help; and not __fish_seen_subcommand_from status selftest setup help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
