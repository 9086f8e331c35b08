//! An in-memory backend that records what it is asked to do; for tests and `--test`.

use std::sync::{Arc, Mutex};

use crate::{Error, Firewall, Grant, Held};

/// Everything the recorder saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Record {
    /// Setups, with their flush flag.
    pub setups: Vec<bool>,
    /// Applied grants, in order.
    pub grants: Vec<Grant>,
    /// Number of grants in each successful `apply` call (one transaction each).
    pub batches: Vec<usize>,
    /// Shutdowns.
    pub shutdowns: usize,
    /// Revoked grants, in order.
    pub revoked: Vec<Grant>,
}

/// Records calls; optionally fails every `apply`.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Shared record, so a test can look while the daemon owns the backend.
    pub record: Arc<Mutex<Record>>,
    /// While set, refuse every apply with this message.
    pub fail_apply: Arc<Mutex<Option<String>>>,
    /// While set, the base is "gone" ([`Firewall::intact`] says so; `setup` clears it).
    pub base_missing: Arc<Mutex<bool>>,
}

impl Firewall for Memory {
    fn setup(&mut self, flush: bool) -> Result<(), Error> {
        if let Ok(mut m) = self.base_missing.lock() {
            *m = false;
        }
        self.record
            .lock()
            .map_err(|_| Error::Refused("poisoned".into()))?
            .setups
            .push(flush);
        Ok(())
    }

    fn apply(&mut self, grants: &[Grant]) -> Result<(), Error> {
        if let Some(m) = self
            .fail_apply
            .lock()
            .map_err(|_| Error::Refused("poisoned".into()))?
            .clone()
        {
            return Err(Error::Refused(m));
        }
        let mut r = self
            .record
            .lock()
            .map_err(|_| Error::Refused("poisoned".into()))?;
        r.grants.extend_from_slice(grants);
        r.batches.push(grants.len());
        Ok(())
    }

    fn intact(&mut self) -> Result<(), Error> {
        if self.base_missing.lock().is_ok_and(|m| *m) {
            return Err(Error::Missing("the base is gone (simulated)".into()));
        }
        Ok(())
    }

    fn revoke(&mut self, grants: &[Grant]) -> Result<(), Error> {
        let mut r = self
            .record
            .lock()
            .map_err(|_| Error::Refused("poisoned".into()))?;
        r.revoked.extend_from_slice(grants);
        Ok(())
    }

    fn list(&mut self) -> Result<Vec<Held>, Error> {
        let r = self
            .record
            .lock()
            .map_err(|_| Error::Refused("poisoned".into()))?;
        Ok(r.grants
            .iter()
            .filter(|g| !r.revoked.contains(g))
            .map(|g| Held {
                source: g.source,
                proto: g.proto,
                port: g.port,
                left: g.timeout,
            })
            .collect())
    }

    fn shutdown(&mut self) -> Result<(), Error> {
        self.record
            .lock()
            .map_err(|_| Error::Refused("poisoned".into()))?
            .shutdowns += 1;
        Ok(())
    }

    fn describe(&self) -> String {
        "in-memory (no firewall changes)".into()
    }
}
