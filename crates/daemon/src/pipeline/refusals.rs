//! One log line per source address for packets refused before they authenticate (not
//! SPA, HMAC mismatch, no decryption) and for replays, so that an admin and fail2ban see
//! who sends them: at most one line per address every [`WINDOW`], the next one saying
//! how many were left out, for a bounded number of addresses (past that, one summary
//! line per window for all the others). A flood never floods the log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The shortest time between two lines about one address.
pub const WINDOW: Duration = Duration::from_secs(10);

/// The most addresses tracked at once.
pub const MAX_SOURCES: usize = 1024;

/// What to log about a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Say {
    /// A line about this address; `suppressed` refusals from it were left out since.
    Source {
        /// Left out since the last line.
        suppressed: u64,
    },
    /// A line about all the addresses past [`MAX_SOURCES`]: this many refusals.
    Others {
        /// Refusals since the last such line.
        count: u64,
    },
}

/// The per-address limiter.
#[derive(Debug, Default)]
pub struct RefusalLog {
    /// Per address: when its last line was written, and what was left out since.
    sources: HashMap<IpAddr, (Instant, u64)>,
    /// Refusals from addresses that found the table full, since `others_since`.
    others: u64,
    others_since: Option<Instant>,
    /// When the table was last cleared of addresses that went quiet.
    swept: Option<Instant>,
}

impl RefusalLog {
    /// A refusal from `src`: what to log now, if anything.
    pub fn refused(&mut self, src: IpAddr, now: Instant) -> Option<Say> {
        let full = self.sources.len() >= MAX_SOURCES;
        if full
            && !self.sources.contains_key(&src)
            && self
                .swept
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            // At most once a second: a flood of new addresses costs no more than that.
            self.sources
                .retain(|_, (at, n)| now.duration_since(*at) < WINDOW * if *n > 0 { 6 } else { 1 });
            self.swept = Some(now);
        }
        if let Some((at, suppressed)) = self.sources.get_mut(&src) {
            if now.duration_since(*at) < WINDOW {
                *suppressed += 1;
                return None;
            }
            *at = now;
            return Some(Say::Source {
                suppressed: std::mem::take(suppressed),
            });
        }
        if self.sources.len() < MAX_SOURCES {
            self.sources.insert(src, (now, 0));
            return Some(Say::Source { suppressed: 0 });
        }
        self.others += 1;
        if self
            .others_since
            .is_some_and(|since| now.duration_since(since) < WINDOW)
        {
            return None;
        }
        self.others_since = Some(now);
        Some(Say::Others {
            count: std::mem::take(&mut self.others),
        })
    }
}

/// The log line.
pub fn line(src: IpAddr, reason: &dyn std::fmt::Display, say: Say) -> String {
    match say {
        Say::Source { suppressed: 0 } => format!("{src}: refused: {reason}"),
        Say::Source { suppressed } => {
            format!("{src}: refused: {reason} ({suppressed} more from this address suppressed)")
        }
        Say::Others { count } => format!(
            "refused {count} packet(s) from other addresses since the last such line (more than {MAX_SOURCES} addresses in {} s: no line per address)",
            WINDOW.as_secs()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_address_per_window_then_a_count() {
        let mut r = RefusalLog::default();
        let t = Instant::now();
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let b: IpAddr = "2001:db8::7".parse().unwrap();
        let say = r.refused(a, t).unwrap();
        assert_eq!(
            line(a, &"hmac mismatch", say),
            "198.18.0.2: refused: hmac mismatch"
        );
        for i in 1..=5 {
            assert_eq!(r.refused(a, t + Duration::from_millis(i)), None);
        }
        assert!(r.refused(b, t).is_some());
        let say = r.refused(a, t + WINDOW).unwrap();
        assert_eq!(
            line(a, &"replayed packet", say),
            "198.18.0.2: refused: replayed packet (5 more from this address suppressed)"
        );
    }

    #[test]
    fn past_the_cap_other_addresses_share_one_line_per_window() {
        let mut r = RefusalLog::default();
        let t = Instant::now();
        let mut lines = 0;
        for i in 0..(MAX_SOURCES as u32 + 1000) {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0xc612_0000 + i));
            lines += usize::from(r.refused(ip, t).is_some());
        }
        // One line per tracked address, and one for all the others.
        assert_eq!(lines, MAX_SOURCES + 1);
        assert_eq!(r.sources.len(), MAX_SOURCES);
        let ip = IpAddr::from(std::net::Ipv4Addr::from(0xc613_0000));
        assert_eq!(r.refused(ip, t + WINDOW / 2), None);
        assert_eq!(r.others, 1000);
    }
}
