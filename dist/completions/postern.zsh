#compdef postern

autoload -U is-at-least

_postern() {
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
'-A+[Ports to open on the server, e.g. tcp/22 or tcp/22,udp/53]:PROTO/PORT,...:_default' \
'--access=[Ports to open on the server, e.g. tcp/22 or tcp/22,udp/53]:PROTO/PORT,...:_default' \
'-a+[Address to open access for (IPv4; IPv6 only with postern'\''s daemon)]:IP:_default' \
'--allow-ip=[Address to open access for (IPv4; IPv6 only with postern'\''s daemon)]:IP:_default' \
'--resolve-url=[URL that answers with your public address (for -R)]:URL:_default' \
'-D+[SPA server\: host name, IPv4 or IPv6 address]:HOST:_default' \
'--destination=[SPA server\: host name, IPv4 or IPv6 address]:HOST:_default' \
'-p+[Destination port of the SPA packet (default 62201, for every -P)]:PORT:_default' \
'--server-port=[Destination port of the SPA packet (default 62201, for every -P)]:PORT:_default' \
'-P+[Transport\: udp (default), tcp, http; udpraw, tcpraw or icmp (raw sockets, root)]:PROTO:_default' \
'--server-proto=[Transport\: udp (default), tcp, http; udpraw, tcpraw or icmp (raw sockets, root)]:PROTO:_default' \
'-H+[Send the packet through this HTTP proxy\: HOST\[\:PORT\] (implies -P http)]:HOST[:PORT]:_default' \
'--http-proxy=[Send the packet through this HTTP proxy\: HOST\[\:PORT\] (implies -P http)]:HOST[:PORT]:_default' \
'--icmp-type=[ICMP type for -P icmp (default 0, echo reply)]:TYPE:_default' \
'--icmp-code=[ICMP code for -P icmp (default 0)]:CODE:_default' \
'-Q+[Source address of the packet (raw transports only; needs root)]:IP:_default' \
'--spoof-source=[Source address of the packet (raw transports only; needs root)]:IP:_default' \
'-S+[Source port of the SPA packet]:PORT:_default' \
'--source-port=[Source port of the SPA packet]:PORT:_default' \
'-f+[Ask the server to keep access open this many seconds]:SECONDS:_default' \
'--fw-timeout=[Ask the server to keep access open this many seconds]:SECONDS:_default' \
'-C+[Ask the server to run this command instead of opening ports]:COMMAND:_default' \
'--server-cmd=[Ask the server to run this command instead of opening ports]:COMMAND:_default' \
'-N+[NAT access to an internal host\: HOST\:PORT]:HOST:PORT:_default' \
'--nat-access=[NAT access to an internal host\: HOST\:PORT]:HOST:PORT:_default' \
'--nat-port=[Port to ask the server to forward (replaces the port in -A)]:PORT:_default' \
'-U+[Username to put in the packet]:USER:_default' \
'--spoof-user=[Username to put in the packet]:USER:_default' \
'--time-offset-plus=[Add time to the packet'\''s timestamp\: N, Nm, Nh or Nd]:TIME:_default' \
'--time-offset-minus=[Subtract time from the packet'\''s timestamp\: N, Nm, Nh or Nd]:TIME:_default' \
'-n+[Use this stanza of the rc file (on top of \[default\])]:NAME:_default' \
'--named-config=[Use this stanza of the rc file (on top of \[default\])]:NAME:_default' \
'--rc-file=[Path of the rc file (default ~/.fwknoprc)]:FILE:_files' \
'-K+[Write the generated keys to this file (implies --key-gen)]:FILE:_files' \
'--key-gen-file=[Write the generated keys to this file (implies --key-gen)]:FILE:_files' \
'--key-len=[Length of the generated encryption key in bytes (1..32)]:N:_default' \
'--hmac-key-len=[Length of the generated HMAC key in bytes (1..128)]:N:_default' \
'--key-rijndael=[Rijndael key (passphrase)]:KEY:_default' \
'--key-base64-rijndael=[Rijndael key, base64]:B64:_default' \
'--key-hmac=[HMAC key (passphrase)]:KEY:_default' \
'--key-base64-hmac=[HMAC key, base64]:B64:_default' \
'--hmac-digest-type=[HMAC type\: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512]:NAME:_default' \
'-m+[SPA digest type\: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512]:NAME:_default' \
'--digest-type=[SPA digest type\: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512]:NAME:_default' \
'-M+[Encryption mode\: cbc (default), ecb, cfb, ofb, ctr, legacy]:NAME:_default' \
'--encryption-mode=[Encryption mode\: cbc (default), ecb, cfb, ofb, ctr, legacy]:NAME:_default' \
'-G+[Read the encryption key from a file of \`<server>\: <key>\` lines]:FILE:_files' \
'--get-key=[Read the encryption key from a file of \`<server>\: <key>\` lines]:FILE:_files' \
'--get-hmac-key=[Read the HMAC key from a file of \`<server>\: <key>\` lines]:FILE:_files' \
'--fd=[Read the keys that are not configured from this file descriptor]:N:_default' \
'-B+[Save the packet to this file]:FILE:_files' \
'--save-packet=[Save the packet to this file]:FILE:_files' \
'-E+[File the last run'\''s arguments are kept in (default ~/.fwknop.run)]:FILE:_files' \
'--save-args-file=[File the last run'\''s arguments are kept in (default ~/.fwknop.run)]:FILE:_files' \
'-u+[HTTP User-Agent for -P http and -R]:AGENT:_default' \
'--user-agent=[HTTP User-Agent for -P http and -R]:AGENT:_default' \
'-s[Let the server use the packet'\''s source address (not recommended)]' \
'--source-ip[Let the server use the packet'\''s source address (not recommended)]' \
'-R[Find your public address over HTTPS (see --resolve-url)]' \
'--resolve-ip-https[Find your public address over HTTPS (see --resolve-url)]' \
'--resolve-http-only[Allow plain HTTP for -R'\''s default URL (open to tampering)]' \
'-r[Send to a random destination port (10000-65534)]' \
'--rand-port[Send to a random destination port (10000-65534)]' \
'--nat-local[Reach a service on the server itself through a forwarded port]' \
'--nat-rand-port[Pick a random port to forward]' \
'--no-rc-file[Do not read the rc file]' \
'--save-rc-stanza[Save the options given on the command line as the -n stanza of the rc file (the -D server'\''s stanza without -n), replacing what it held, as fwknop does]' \
'--force-stanza[With --save-rc-stanza, replace keys without asking]' \
'--stanza-list[List the stanzas of the rc file]' \
'-k[Generate a Rijndael key and an HMAC key and print them]' \
'--key-gen[Generate a Rijndael key and an HMAC key and print them]' \
'--use-hmac[Require an HMAC (prompt for its key if none is configured)]' \
'--stdin[Read the keys that are not configured from standard input (same as --fd 0)]' \
'-T[Build and print the packet without sending it]' \
'--test[Build and print the packet without sending it]' \
'-b[Append to the -B file instead of overwriting it]' \
'--save-packet-append[Append to the -B file instead of overwriting it]' \
'-l[Run again with the arguments of the last run]' \
'--last-cmd[Run again with the arguments of the last run]' \
'--show-last[Show the arguments of the last run]' \
'--no-save-args[Do not save this run'\''s arguments]' \
'--server-resolve-ipv4[Resolve the server'\''s name to an IPv4 address only]' \
'*-v[More output (repeat for more)]' \
'*--verbose[More output (repeat for more)]' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'-V[Print version]' \
'--version[Print version]' \
":: :_postern_commands" \
"*::: :->postern" \
&& ret=0
    case $state in
    (postern)
        words=($line[1] "${words[@]}")
        (( CURRENT += 1 ))
        curcontext="${curcontext%:*:*}:postern-command-$line[1]:"
        case $line[1] in
            (decode)
_arguments "${_arguments_options[@]}" : \
'(--key-base64-rijndael)--key-rijndael=[Rijndael key as a passphrase (access.conf KEY)]:PASS:_default' \
'--key-base64-rijndael=[Rijndael key as base64 (access.conf KEY_BASE64)]:B64:_default' \
'(--key-base64-hmac)--key-hmac=[HMAC key as a passphrase (access.conf HMAC_KEY)]:PASS:_default' \
'--key-base64-hmac=[HMAC key as base64 (access.conf HMAC_KEY_BASE64)]:B64:_default' \
'--hmac-digest-type=[HMAC type\: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512]:NAME:_default' \
'-M+[Encryption mode\: cbc (default), ecb, cfb, ofb, ctr, legacy]:NAME:_default' \
'--encryption-mode=[Encryption mode\: cbc (default), ecb, cfb, ofb, ctr, legacy]:NAME:_default' \
'-h[Print help (see more with '\''--help'\'')]' \
'--help[Print help (see more with '\''--help'\'')]' \
'::packet -- The packet; read from standard input when absent or `-`:_default' \
&& ret=0
;;
(keygen)
_arguments "${_arguments_options[@]}" : \
'--key-len=[Encryption key length in bytes (1..32)]:N:_default' \
'--hmac-key-len=[HMAC key length in bytes (1..128)]:N:_default' \
'--hmac-digest-type=[HMAC type the key is for (sets the default HMAC key length)]:NAME:_default' \
'-K+[Write the keys to this file (mode 0600) instead of standard output]:FILE:_files' \
'--key-gen-file=[Write the keys to this file (mode 0600) instead of standard output]:FILE:_files' \
'-h[Print help]' \
'--help[Print help]' \
&& ret=0
;;
(generate)
_arguments "${_arguments_options[@]}" : \
'-h[Print help]' \
'--help[Print help]' \
':what -- What to print:(man bash zsh fish)' \
&& ret=0
;;
        esac
    ;;
esac
}

(( $+functions[_postern_commands] )) ||
_postern_commands() {
    local commands; commands=(
'decode:Decode an SPA packet with the given keys and print its fields as JSON' \
'keygen:Generate a Rijndael key and an HMAC key (same as --key-gen)' \
'generate:Print the man page (\`man\`) or shell completions (\`bash\`, \`zsh\`, \`fish\`)' \
    )
    _describe -t commands 'postern commands' commands "$@"
}
(( $+functions[_postern__subcmd__decode_commands] )) ||
_postern__subcmd__decode_commands() {
    local commands; commands=()
    _describe -t commands 'postern decode commands' commands "$@"
}
(( $+functions[_postern__subcmd__generate_commands] )) ||
_postern__subcmd__generate_commands() {
    local commands; commands=()
    _describe -t commands 'postern generate commands' commands "$@"
}
(( $+functions[_postern__subcmd__keygen_commands] )) ||
_postern__subcmd__keygen_commands() {
    local commands; commands=()
    _describe -t commands 'postern keygen commands' commands "$@"
}

if [ "$funcstack[1]" = "_postern" ]; then
    _postern "$@"
else
    compdef _postern postern
fi
