# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_postern_global_optspecs
    string join \n A/access= a/allow-ip= s/source-ip R/resolve-ip-https resolve-url= resolve-http-only D/destination= p/server-port= P/server-proto= H/http-proxy= icmp-type= icmp-code= Q/spoof-source= S/source-port= r/rand-port f/fw-timeout= C/server-cmd= N/nat-access= nat-local nat-port= nat-rand-port U/spoof-user= time-offset-plus= time-offset-minus= n/named-config= rc-file= no-rc-file save-rc-stanza force-stanza stanza-list k/key-gen K/key-gen-file= key-len= hmac-key-len= key-rijndael= key-base64-rijndael= key-hmac= key-base64-hmac= use-hmac hmac-digest-type= m/digest-type= M/encryption-mode= G/get-key= get-hmac-key= stdin fd= T/test B/save-packet= b/save-packet-append l/last-cmd show-last no-save-args E/save-args-file= u/user-agent= server-resolve-ipv4 v/verbose h/help V/version
end

function __fish_postern_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_postern_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_postern_using_subcommand
    set -l cmd (__fish_postern_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c postern -n "__fish_postern_needs_command" -s A -l access -d 'Ports to open on the server, e.g. tcp/22 or tcp/22,udp/53' -r
complete -c postern -n "__fish_postern_needs_command" -s a -l allow-ip -d 'Address to open access for (IPv4; IPv6 only with postern\'s daemon)' -r
complete -c postern -n "__fish_postern_needs_command" -l resolve-url -d 'URL that answers with your public address (for -R)' -r
complete -c postern -n "__fish_postern_needs_command" -s D -l destination -d 'SPA server: host name, IPv4 or IPv6 address' -r
complete -c postern -n "__fish_postern_needs_command" -s p -l server-port -d 'Destination port of the SPA packet (default 62201, for every -P)' -r
complete -c postern -n "__fish_postern_needs_command" -s P -l server-proto -d 'Transport: udp (default), tcp, http; udpraw, tcpraw or icmp (raw sockets, root)' -r
complete -c postern -n "__fish_postern_needs_command" -s H -l http-proxy -d 'Send the packet through this HTTP proxy: HOST[:PORT] (implies -P http)' -r
complete -c postern -n "__fish_postern_needs_command" -l icmp-type -d 'ICMP type for -P icmp (default 0, echo reply)' -r
complete -c postern -n "__fish_postern_needs_command" -l icmp-code -d 'ICMP code for -P icmp (default 0)' -r
complete -c postern -n "__fish_postern_needs_command" -s Q -l spoof-source -d 'Source address of the packet (raw transports only; needs root)' -r
complete -c postern -n "__fish_postern_needs_command" -s S -l source-port -d 'Source port of the SPA packet' -r
complete -c postern -n "__fish_postern_needs_command" -s f -l fw-timeout -d 'Ask the server to keep access open this many seconds' -r
complete -c postern -n "__fish_postern_needs_command" -s C -l server-cmd -d 'Ask the server to run this command instead of opening ports' -r
complete -c postern -n "__fish_postern_needs_command" -s N -l nat-access -d 'NAT access to an internal host: HOST:PORT' -r
complete -c postern -n "__fish_postern_needs_command" -l nat-port -d 'Port to ask the server to forward (replaces the port in -A)' -r
complete -c postern -n "__fish_postern_needs_command" -s U -l spoof-user -d 'Username to put in the packet' -r
complete -c postern -n "__fish_postern_needs_command" -l time-offset-plus -d 'Add time to the packet\'s timestamp: N, Nm, Nh or Nd' -r
complete -c postern -n "__fish_postern_needs_command" -l time-offset-minus -d 'Subtract time from the packet\'s timestamp: N, Nm, Nh or Nd' -r
complete -c postern -n "__fish_postern_needs_command" -s n -l named-config -d 'Use this stanza of the rc file (on top of [default])' -r
complete -c postern -n "__fish_postern_needs_command" -l rc-file -d 'Path of the rc file (default ~/.fwknoprc)' -r -F
complete -c postern -n "__fish_postern_needs_command" -s K -l key-gen-file -d 'Write the generated keys to this file (implies --key-gen)' -r -F
complete -c postern -n "__fish_postern_needs_command" -l key-len -d 'Length of the generated encryption key in bytes (1..32)' -r
complete -c postern -n "__fish_postern_needs_command" -l hmac-key-len -d 'Length of the generated HMAC key in bytes (1..128)' -r
complete -c postern -n "__fish_postern_needs_command" -l key-rijndael -d 'Rijndael key (passphrase)' -r
complete -c postern -n "__fish_postern_needs_command" -l key-base64-rijndael -d 'Rijndael key, base64' -r
complete -c postern -n "__fish_postern_needs_command" -l key-hmac -d 'HMAC key (passphrase)' -r
complete -c postern -n "__fish_postern_needs_command" -l key-base64-hmac -d 'HMAC key, base64' -r
complete -c postern -n "__fish_postern_needs_command" -l hmac-digest-type -d 'HMAC type: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512' -r
complete -c postern -n "__fish_postern_needs_command" -s m -l digest-type -d 'SPA digest type: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512' -r
complete -c postern -n "__fish_postern_needs_command" -s M -l encryption-mode -d 'Encryption mode: cbc (default), ecb, cfb, ofb, ctr, legacy' -r
complete -c postern -n "__fish_postern_needs_command" -s G -l get-key -d 'Read the encryption key from a file of `<server>: <key>` lines' -r -F
complete -c postern -n "__fish_postern_needs_command" -l get-hmac-key -d 'Read the HMAC key from a file of `<server>: <key>` lines' -r -F
complete -c postern -n "__fish_postern_needs_command" -l fd -d 'Read the keys that are not configured from this file descriptor' -r
complete -c postern -n "__fish_postern_needs_command" -s B -l save-packet -d 'Save the packet to this file' -r -F
complete -c postern -n "__fish_postern_needs_command" -s E -l save-args-file -d 'File the last run\'s arguments are kept in (default ~/.fwknop.run)' -r -F
complete -c postern -n "__fish_postern_needs_command" -s u -l user-agent -d 'HTTP User-Agent for -P http and -R' -r
complete -c postern -n "__fish_postern_needs_command" -s s -l source-ip -d 'Let the server use the packet\'s source address (not recommended)'
complete -c postern -n "__fish_postern_needs_command" -s R -l resolve-ip-https -d 'Find your public address over HTTPS (see --resolve-url)'
complete -c postern -n "__fish_postern_needs_command" -l resolve-http-only -d 'Allow plain HTTP for -R\'s default URL (open to tampering)'
complete -c postern -n "__fish_postern_needs_command" -s r -l rand-port -d 'Send to a random destination port (10000-65534)'
complete -c postern -n "__fish_postern_needs_command" -l nat-local -d 'Reach a service on the server itself through a forwarded port'
complete -c postern -n "__fish_postern_needs_command" -l nat-rand-port -d 'Pick a random port to forward'
complete -c postern -n "__fish_postern_needs_command" -l no-rc-file -d 'Do not read the rc file'
complete -c postern -n "__fish_postern_needs_command" -l save-rc-stanza -d 'Save the options given on the command line as the -n stanza of the rc file (the -D server\'s stanza without -n), replacing what it held, as fwknop does'
complete -c postern -n "__fish_postern_needs_command" -l force-stanza -d 'With --save-rc-stanza, replace keys without asking'
complete -c postern -n "__fish_postern_needs_command" -l stanza-list -d 'List the stanzas of the rc file'
complete -c postern -n "__fish_postern_needs_command" -s k -l key-gen -d 'Generate a Rijndael key and an HMAC key and print them'
complete -c postern -n "__fish_postern_needs_command" -l use-hmac -d 'Require an HMAC (prompt for its key if none is configured)'
complete -c postern -n "__fish_postern_needs_command" -l stdin -d 'Read the keys that are not configured from standard input (same as --fd 0)'
complete -c postern -n "__fish_postern_needs_command" -s T -l test -d 'Build and print the packet without sending it'
complete -c postern -n "__fish_postern_needs_command" -s b -l save-packet-append -d 'Append to the -B file instead of overwriting it'
complete -c postern -n "__fish_postern_needs_command" -s l -l last-cmd -d 'Run again with the arguments of the last run'
complete -c postern -n "__fish_postern_needs_command" -l show-last -d 'Show the arguments of the last run'
complete -c postern -n "__fish_postern_needs_command" -l no-save-args -d 'Do not save this run\'s arguments'
complete -c postern -n "__fish_postern_needs_command" -l server-resolve-ipv4 -d 'Resolve the server\'s name to an IPv4 address only'
complete -c postern -n "__fish_postern_needs_command" -s v -l verbose -d 'More output (repeat for more)'
complete -c postern -n "__fish_postern_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c postern -n "__fish_postern_needs_command" -s V -l version -d 'Print version'
complete -c postern -n "__fish_postern_needs_command" -f -a "decode" -d 'Decode an SPA packet with the given keys and print its fields as JSON'
complete -c postern -n "__fish_postern_needs_command" -f -a "keygen" -d 'Generate a Rijndael key and an HMAC key (same as --key-gen)'
complete -c postern -n "__fish_postern_needs_command" -f -a "generate" -d 'Print the man page (`man`) or shell completions (`bash`, `zsh`, `fish`)'
complete -c postern -n "__fish_postern_using_subcommand decode" -l key-rijndael -d 'Rijndael key as a passphrase (access.conf KEY)' -r
complete -c postern -n "__fish_postern_using_subcommand decode" -l key-base64-rijndael -d 'Rijndael key as base64 (access.conf KEY_BASE64)' -r
complete -c postern -n "__fish_postern_using_subcommand decode" -l key-hmac -d 'HMAC key as a passphrase (access.conf HMAC_KEY)' -r
complete -c postern -n "__fish_postern_using_subcommand decode" -l key-base64-hmac -d 'HMAC key as base64 (access.conf HMAC_KEY_BASE64)' -r
complete -c postern -n "__fish_postern_using_subcommand decode" -l hmac-digest-type -d 'HMAC type: md5, sha1, sha256 (default), sha384, sha512, sha3_256, sha3_512' -r
complete -c postern -n "__fish_postern_using_subcommand decode" -s M -l encryption-mode -d 'Encryption mode: cbc (default), ecb, cfb, ofb, ctr, legacy' -r
complete -c postern -n "__fish_postern_using_subcommand decode" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c postern -n "__fish_postern_using_subcommand keygen" -l key-len -d 'Encryption key length in bytes (1..32)' -r
complete -c postern -n "__fish_postern_using_subcommand keygen" -l hmac-key-len -d 'HMAC key length in bytes (1..128)' -r
complete -c postern -n "__fish_postern_using_subcommand keygen" -l hmac-digest-type -d 'HMAC type the key is for (sets the default HMAC key length)' -r
complete -c postern -n "__fish_postern_using_subcommand keygen" -s K -l key-gen-file -d 'Write the keys to this file (mode 0600) instead of standard output' -r -F
complete -c postern -n "__fish_postern_using_subcommand keygen" -s h -l help -d 'Print help'
complete -c postern -n "__fish_postern_using_subcommand generate" -s h -l help -d 'Print help'
