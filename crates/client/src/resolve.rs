//! `-R`: ask a web service for our public address. The answer's first IPv4 address is
//! used (an IPv6 one if there is none). No wget: a built-in HTTP(S) client.

use std::net::IpAddr;
use std::time::Duration;

use crate::plan::Fail;

/// Find the first IP address in a text (IPv4 preferred).
pub fn first_ip(body: &str) -> Option<IpAddr> {
    let tokens = || body.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'));
    tokens()
        .filter_map(|t| {
            t.trim_matches(|c| c == '.' || c == ':')
                .parse::<std::net::Ipv4Addr>()
                .ok()
        })
        .map(IpAddr::V4)
        .next()
        .or_else(|| {
            tokens()
                .filter_map(|t| t.parse::<std::net::Ipv6Addr>().ok())
                .map(IpAddr::V6)
                .next()
        })
}

/// GET `url` and return the address in the answer.
pub fn external_ip(url: &str, user_agent: &str) -> Result<IpAddr, Fail> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let body = agent
        .get(url)
        .header("User-Agent", user_agent)
        .call()
        .map_err(|e| Fail(format!("-R/--resolve-ip-https: cannot get '{url}': {e}")))?
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .map_err(|e| {
            Fail(format!(
                "-R/--resolve-ip-https: cannot read the answer of '{url}': {e}"
            ))
        })?;
    first_ip(&body).ok_or_else(|| {
        Fail(format!(
            "-R/--resolve-ip-https: no IP address in the answer of '{url}'"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address() {
        assert_eq!(first_ip("198.18.0.2\n").unwrap().to_string(), "198.18.0.2");
        assert_eq!(
            first_ip("<html>Your IP: 203.0.113.9.</html>")
                .unwrap()
                .to_string(),
            "203.0.113.9"
        );
        assert_eq!(
            first_ip("addr 2001:db8::5 here").unwrap().to_string(),
            "2001:db8::5"
        );
        assert_eq!(
            first_ip("2001:db8::5 and 10.0.0.1").unwrap().to_string(),
            "10.0.0.1"
        );
        assert!(first_ip("nothing here").is_none());
    }
}
