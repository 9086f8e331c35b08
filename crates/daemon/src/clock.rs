//! Time as the daemon reads it: the wall clock (for packet ages and the replay file,
//! which fwknop stamps in Unix seconds) and a clock that never steps
//! (`CLOCK_BOOTTIME`: counts suspend, ignores `date -s` and NTP steps) for everything
//! that measures a duration: replay retention, grant deadlines, cycle closes.
//!
//! The pure stages take a [`Now`]; only [`Now::read`] touches the system clocks, so a
//! test can step either clock alone through the same code path.

/// Both clocks at one moment, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Unix time (may step).
    pub wall: u64,
    /// Seconds since boot, including suspend (never steps, never goes back).
    pub mono: u64,
}

impl Now {
    /// Read both clocks.
    pub fn read() -> Now {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
            .map_or(0, |t| u64::try_from(t.tv_sec()).unwrap_or(0));
        Now { wall, mono }
    }

    /// Both clocks `secs` later.
    pub fn plus(self, secs: u64) -> Now {
        Now {
            wall: self.wall + secs,
            mono: self.mono + secs,
        }
    }
}
