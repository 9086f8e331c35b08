_postern() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="postern"
                ;;
            postern,decode)
                cmd="postern__subcmd__decode"
                ;;
            postern,generate)
                cmd="postern__subcmd__generate"
                ;;
            postern,keygen)
                cmd="postern__subcmd__keygen"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        postern)
            opts="-A -a -s -R -D -p -P -H -Q -S -r -f -C -N -U -n -k -K -m -M -G -T -B -b -l -E -u -v -h -V --access --allow-ip --source-ip --resolve-ip-https --resolve-url --resolve-http-only --destination --server-port --server-proto --http-proxy --icmp-type --icmp-code --spoof-source --source-port --rand-port --fw-timeout --server-cmd --nat-access --nat-local --nat-port --nat-rand-port --spoof-user --time-offset-plus --time-offset-minus --named-config --rc-file --no-rc-file --save-rc-stanza --force-stanza --stanza-list --key-gen --key-gen-file --key-len --hmac-key-len --key-rijndael --key-base64-rijndael --key-hmac --key-base64-hmac --use-hmac --hmac-digest-type --digest-type --encryption-mode --get-key --get-hmac-key --stdin --fd --test --save-packet --save-packet-append --last-cmd --show-last --no-save-args --save-args-file --user-agent --server-resolve-ipv4 --verbose --help --version decode keygen generate"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --access)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -A)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --allow-ip)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -a)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --resolve-url)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --destination)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -D)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --server-port)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -p)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --server-proto)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -P)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --http-proxy)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -H)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --icmp-type)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --icmp-code)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --spoof-source)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -Q)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --source-port)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -S)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fw-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -f)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --server-cmd)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -C)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --nat-access)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -N)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --nat-port)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --spoof-user)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -U)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --time-offset-plus)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --time-offset-minus)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --named-config)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -n)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --rc-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key-gen-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -K)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key-len)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --hmac-key-len)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key-rijndael)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key-base64-rijndael)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key-hmac)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key-base64-hmac)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --hmac-digest-type)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --digest-type)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -m)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --encryption-mode)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -M)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --get-key)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -G)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --get-hmac-key)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --fd)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --save-packet)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -B)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --save-args-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -E)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --user-agent)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -u)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        postern__subcmd__decode)
            opts="-M -h --key-rijndael --key-base64-rijndael --key-hmac --key-base64-hmac --hmac-digest-type --encryption-mode --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --key-rijndael)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key-base64-rijndael)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key-hmac)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key-base64-hmac)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --hmac-digest-type)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --encryption-mode)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -M)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        postern__subcmd__generate)
            opts="-h --help man bash zsh fish"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
        postern__subcmd__keygen)
            opts="-K -h --key-len --hmac-key-len --hmac-digest-type --key-gen-file --help"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 2 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --key-len)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --hmac-key-len)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --hmac-digest-type)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --key-gen-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -K)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _postern -o nosort -o bashdefault -o default postern
else
    complete -F _postern -o bashdefault -o default postern
fi
