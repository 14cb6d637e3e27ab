//! ClusterIP allocation for Services from the service CIDR. Each allocated address is a key
//! in the store, created atomically, so two Services can never get the same address.

use crate::status::ApiError;
use berth_store::{Store, StoreError};
use rand::Rng;
use std::net::Ipv4Addr;

/// An IPv4 service CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    network: u32,
    prefix: u8,
}

impl ServiceCidr {
    /// Parses `a.b.c.d/n` (n between 12 and 28).
    pub fn parse(cidr: &str) -> Result<Self, String> {
        let (ip, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR {cidr:?}: expected a.b.c.d/n"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|e| format!("invalid CIDR {cidr:?}: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|e| format!("invalid CIDR {cidr:?}: {e}"))?;
        if !(12..=28).contains(&prefix) {
            return Err(format!(
                "invalid CIDR {cidr:?}: the prefix must be between /12 and /28"
            ));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(ServiceCidr {
            network: u32::from(ip) & mask,
            prefix,
        })
    }

    fn size(&self) -> u32 {
        1 << (32 - self.prefix)
    }

    /// Whether `ip` is inside the CIDR.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & (u32::MAX << (32 - self.prefix)) == self.network
    }

    /// The first usable address, reserved for the `kubernetes` Service as upstream does.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network + 1)
    }

    fn key(ip: Ipv4Addr) -> String {
        format!("/registry/ranges/serviceips/{ip}")
    }

    /// Allocates `requested`, or a free address at random.
    pub async fn allocate(
        &self,
        store: &dyn Store,
        requested: Option<Ipv4Addr>,
        owner: &str,
    ) -> Result<Ipv4Addr, ApiError> {
        if let Some(ip) = requested {
            if !self.contains(ip) {
                return Err(invalid_ip(
                    ip,
                    &format!(
                        "provided IP is not in the valid range. The range of valid IPs is {}/{}",
                        Ipv4Addr::from(self.network),
                        self.prefix
                    ),
                ));
            }
            return match store
                .create(&Self::key(ip), owner.as_bytes().to_vec())
                .await
            {
                Ok(_) => Ok(ip),
                Err(StoreError::AlreadyExists(_)) => {
                    Err(invalid_ip(ip, "provided IP is already allocated"))
                }
                Err(e) => Err(e.into()),
            };
        }
        // Skip the network address, the reserved first address and the broadcast address.
        let usable = self.size().saturating_sub(3).max(1);
        let start = rand::thread_rng().gen_range(0..usable);
        for i in 0..usable.min(4096) {
            let ip = Ipv4Addr::from(self.network + 2 + (start + i) % usable);
            match store
                .create(&Self::key(ip), owner.as_bytes().to_vec())
                .await
            {
                Ok(_) => return Ok(ip),
                Err(StoreError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::internal(
            "failed to allocate a cluster IP: the service IP range is full",
        ))
    }

    /// Frees an address (missing is fine).
    pub async fn release(&self, store: &dyn Store, ip: &str) {
        if let Ok(ip) = ip.parse::<Ipv4Addr>() {
            match store.delete(&Self::key(ip), None).await {
                Ok(_) | Err(StoreError::NotFound(_)) => {}
                Err(e) => tracing::warn!("failed to release cluster IP {ip}: {e}"),
            }
        }
    }
}

fn invalid_ip(ip: Ipv4Addr, why: &str) -> ApiError {
    ApiError::new(422, "Invalid", format!("spec.clusterIPs: Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: {why}"))
        .with_cause("FieldValueInvalid", &format!("Invalid value: []string{{\"{ip}\"}}: failed to allocate IP {ip}: {why}"), "spec.clusterIPs")
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_store::memory::MemoryStore;

    #[tokio::test]
    async fn allocates_unique_addresses_in_range() {
        let cidr = ServiceCidr::parse("10.96.0.0/28").expect("cidr");
        let store = MemoryStore::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..13 {
            let ip = cidr.allocate(&store, None, "svc").await.expect("allocate");
            assert!(cidr.contains(ip) && ip != cidr.first());
            assert!(seen.insert(ip), "{ip} twice");
        }
        assert!(
            cidr.allocate(&store, None, "svc").await.is_err(),
            "range is full"
        );
        let one = *seen.iter().next().expect("one");
        cidr.release(&store, &one.to_string()).await;
        assert_eq!(
            cidr.allocate(&store, Some(one), "svc").await.ok(),
            Some(one)
        );
        assert!(cidr.allocate(&store, Some(one), "svc").await.is_err());
        assert!(cidr
            .allocate(&store, Some("10.0.0.1".parse().expect("ip")), "svc")
            .await
            .is_err());
        assert!(ServiceCidr::parse("10.0.0.0").is_err());
    }
}
