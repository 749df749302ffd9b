//! Connections open per client IP address, for `max_connections_per_ip`: a count per address,
//! taken when a connection starts (after its PROXY header, if the listener reads one) and
//! given back when it ends. The lock is held for a map update only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The counts of one listener.
#[derive(Debug)]
pub(crate) struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its address's count, given back when dropped.
#[derive(Debug)]
pub(crate) struct IpPlace {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    pub(crate) fn new(max: usize) -> Arc<PerIp> {
        Arc::new(PerIp {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for one more connection from `ip`, unless it has `max` open already.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Box<IpPlace>> {
        self.count(ip, false)
    }

    /// A place for a connection from `ip` that is already open (one handed over at an
    /// upgrade): counted, never refused.
    pub(crate) fn force(self: &Arc<Self>, ip: IpAddr) -> Box<IpPlace> {
        self.count(ip, true)
            .expect("a forced place is always given")
    }

    fn count(self: &Arc<Self>, ip: IpAddr, force: bool) -> Option<Box<IpPlace>> {
        let ip = ip.to_canonical();
        {
            let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
            let n = open.entry(ip).or_insert(0);
            if *n >= self.max && !force {
                return None;
            }
            *n += 1;
        }
        Some(Box::new(IpPlace {
            table: self.clone(),
            ip,
        }))
    }

    /// Connections open from `ip`.
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

impl Drop for IpPlace {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_has_its_own_count_and_gets_places_back() {
        let table = PerIp::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "::ffff:192.0.2.2".parse().unwrap();
        let first = table.take(a).unwrap();
        let _second = table.take(a).unwrap();
        assert!(table.take(a).is_none());
        // The same address written as IPv4-mapped IPv6 counts as itself.
        assert!(table.take("::ffff:192.0.2.1".parse().unwrap()).is_none());
        let _other = table.take(b).unwrap();
        drop(first);
        assert_eq!(table.open(a), 1);
        let forced = [table.take(a).unwrap(), table.force(a)];
        assert_eq!(table.open(a), 3);
        drop(forced);
        drop(_second);
        assert_eq!(table.open(a), 0);
        assert!(
            table.open.lock().unwrap().len() == 1,
            "empty counts are removed"
        );
    }
}
