//! Stage 1, pure: the key-independent checks (size, prefix, charset, class). The cheap
//! filter that junk never gets past; no cryptography happens here. With
//! `ENABLE_SPA_OVER_HTTP`, an HTTP request is first unwrapped to the SPA data it
//! carries ([`unwrap_http`]).

use std::net::IpAddr;

use postern_proto::{Error, Packet};

/// The longest HTTP request taken (an SPA packet of the maximum size with the request
/// line and headers a client or a proxy adds).
pub const MAX_HTTP_REQUEST: usize = postern_proto::wire::MAX_PACKET_LEN + 1024;

/// Check a payload and give its checked view.
pub fn decode(payload: &[u8]) -> Result<Packet<'_>, Error> {
    Packet::new_checked(payload)
}

/// The SPA data of an HTTP request, and the address its `X-Forwarded-For` header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http {
    /// The SPA packet's text (base64 again: `-` and `_` mapped back to `+` and `/`).
    pub data: Vec<u8>,
    /// The first address of an `X-Forwarded-For` header, when there is one and it parses.
    pub forwarded_for: Option<IpAddr>,
}

/// Unwrap an SPA packet sent as an HTTP request, as fwknopd 2.6 does: the payload
/// starts with `GET /` (the `fwknop -P http` form) or `GET http://HOST/` (the form a
/// proxy is sent, `-H`), has a `User-Agent: Fwknop` header, and the data runs from
/// there to the first blank; the client's URL-safe `-` and `_` are mapped back to `+`
/// and `/`. `None` for anything else (which then fails [`decode`] as junk).
pub fn unwrap_http(payload: &[u8]) -> Option<Http> {
    if payload.len() > MAX_HTTP_REQUEST {
        return None;
    }
    let rest = payload.strip_prefix(b"GET ")?;
    let rest = match rest.strip_prefix(b"/") {
        Some(r) => r,
        None => {
            // The absolute form: skip the scheme and host up to the path.
            let r = strip_prefix_ignore_case(rest, b"http://")?;
            let slash = r
                .iter()
                .position(|&c| c == b'/' || c.is_ascii_whitespace())?;
            r.get(slash..)?.strip_prefix(b"/")?
        }
    };
    let headers = Headers(rest);
    if !headers.user_agent_is_fwknop() {
        return None;
    }
    let end = rest
        .iter()
        .position(|c| c.is_ascii_whitespace())
        .unwrap_or(rest.len());
    let data = rest[..end]
        .iter()
        .map(|&c| match c {
            b'-' => b'+',
            b'_' => b'/',
            c => c,
        })
        .collect();
    Some(Http {
        data,
        forwarded_for: headers.forwarded_for(),
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// The header lines of a request (after its request line).
struct Headers<'a>(&'a [u8]);

impl<'a> Headers<'a> {
    fn lines(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut it = self.0.split(|&c| c == b'\n');
        it.next(); // the rest of the request line
        it.map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .take_while(|l| !l.is_empty())
    }

    fn value(&self, name: &[u8]) -> Option<&'a [u8]> {
        self.lines().find_map(|l| {
            let colon = l.iter().position(|&c| c == b':')?;
            l[..colon]
                .eq_ignore_ascii_case(name)
                .then(|| l[colon + 1..].trim_ascii())
        })
    }

    fn user_agent_is_fwknop(&self) -> bool {
        self.value(b"User-Agent")
            .is_some_and(|v| v.starts_with(b"Fwknop"))
    }

    fn forwarded_for(&self) -> Option<IpAddr> {
        let v = self.value(b"X-Forwarded-For")?;
        let first = v.split(|&c| c == b',').next()?.trim_ascii();
        std::str::from_utf8(first).ok()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"GET /8Ab-cd_ef HTTP/1.0\r\nUser-Agent: Fwknop/2.6.10\r\nAccept: */*\r\nHost: 198.18.1.1\r\nConnection: close\r\n\r\n";

    #[test]
    fn the_fwknop_request_and_the_proxy_form() {
        let h = unwrap_http(REQ).unwrap();
        assert_eq!(h.data, b"8Ab+cd/ef");
        assert_eq!(h.forwarded_for, None);
        let proxied = b"GET http://198.18.1.1/8Ab-cd_ef HTTP/1.1\r\nUser-Agent: Fwknop/2.6.10\r\nX-Forwarded-For: 198.18.9.9, 10.0.0.1\r\n\r\n";
        let h = unwrap_http(proxied).unwrap();
        assert_eq!(h.data, b"8Ab+cd/ef");
        assert_eq!(h.forwarded_for, Some("198.18.9.9".parse().unwrap()));
    }

    #[test]
    fn not_an_spa_request() {
        for p in [
            &b"GET /8Abcd HTTP/1.0\r\nUser-Agent: curl/8\r\n\r\n"[..],
            b"GET /8Abcd HTTP/1.0\r\n\r\nUser-Agent: Fwknop\r\n",
            b"POST /8Abcd HTTP/1.0\r\nUser-Agent: Fwknop\r\n\r\n",
            b"GET http:/x",
            b"GET ",
            b"",
            b"8Abcdefgh",
        ] {
            assert_eq!(unwrap_http(p), None, "{}", String::from_utf8_lossy(p));
        }
        let mut long = REQ.to_vec();
        long.resize(MAX_HTTP_REQUEST + 1, b'x');
        assert_eq!(unwrap_http(&long), None);
        for n in 0..REQ.len() {
            let _ = unwrap_http(&REQ[..n]);
        }
    }
}
