//! Address management for subnets: default pools, pool validation, and the lowest free address.
//! Pure functions over plain data; the store holds the allocations (one row per address).

use super::model::AllocationPool;
use ipnet::IpNet;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a subnet's addressing is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    /// The prefix leaves no address to hand out.
    #[error("subnet {0} is too small: it has no usable addresses")]
    TooSmall(IpNet),
    /// An address or pool lies outside the subnet.
    #[error("{what} {ip} is not in subnet {cidr}")]
    OutsideSubnet {
        /// What the address is.
        what: &'static str,
        /// The address.
        ip: IpAddr,
        /// The subnet.
        cidr: IpNet,
    },
    /// An address that cannot be given to a port (network or broadcast address).
    #[error("{ip} is the {which} address of subnet {cidr}")]
    Reserved {
        /// The address.
        ip: IpAddr,
        /// `network` or `broadcast`.
        which: &'static str,
        /// The subnet.
        cidr: IpNet,
    },
    /// A pool whose start is after its end.
    #[error("allocation pool {start}-{end} is empty (start after end)")]
    EmptyPool {
        /// Start.
        start: IpAddr,
        /// End.
        end: IpAddr,
    },
    /// Two pools share addresses.
    #[error("allocation pools {0} and {1} overlap")]
    OverlappingPools(String, String),
    /// The gateway is inside a pool.
    #[error("gateway {gateway} is inside allocation pool {pool}")]
    GatewayInPool {
        /// Gateway.
        gateway: IpAddr,
        /// The pool.
        pool: String,
    },
    /// Address family mismatch.
    #[error("{ip} is not an IPv{version} address")]
    WrongFamily {
        /// The address.
        ip: IpAddr,
        /// Expected version.
        version: u8,
    },
}

/// An address as a number, for range arithmetic (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The inverse of [`to_u128`] in the family of `like`.
pub fn from_u128(value: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(value as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

fn pool_text(pool: &AllocationPool) -> String {
    format!("{}-{}", pool.start, pool.end)
}

/// The addresses of `cidr` a port may hold: all but the network address (IPv4 and IPv6: Neutron
/// keeps the IPv6 subnet-router anycast address out too) and the IPv4 broadcast address.
pub fn usable_range(cidr: IpNet) -> Result<(u128, u128), IpamError> {
    let network = to_u128(cidr.network());
    let last = to_u128(cidr.broadcast());
    let (first, last) = match cidr {
        IpNet::V4(v4) if v4.prefix_len() >= 31 => (network, last), // RFC 3021 point-to-point
        IpNet::V4(_) => (network + 1, last.saturating_sub(1)),
        IpNet::V6(_) => (network + 1, last),
    };
    if first > last {
        return Err(IpamError::TooSmall(cidr));
    }
    Ok((first, last))
}

/// Checks that `ip` may be held by a port in `cidr`.
pub fn check_address(cidr: IpNet, ip: IpAddr, what: &'static str) -> Result<(), IpamError> {
    if ip.is_ipv4() != cidr.addr().is_ipv4() {
        return Err(IpamError::WrongFamily {
            ip,
            version: if cidr.addr().is_ipv4() { 4 } else { 6 },
        });
    }
    if !cidr.contains(&ip) {
        return Err(IpamError::OutsideSubnet { what, ip, cidr });
    }
    let (first, last) = usable_range(cidr)?;
    let value = to_u128(ip);
    if value < first {
        return Err(IpamError::Reserved {
            ip,
            which: "network",
            cidr,
        });
    }
    if value > last {
        return Err(IpamError::Reserved {
            ip,
            which: "broadcast",
            cidr,
        });
    }
    Ok(())
}

/// Neutron's default: every usable address except the gateway.
pub fn default_pools(
    cidr: IpNet,
    gateway: Option<IpAddr>,
) -> Result<Vec<AllocationPool>, IpamError> {
    let (first, last) = usable_range(cidr)?;
    let like = cidr.addr();
    let mut pools = Vec::new();
    let gw = gateway.map(to_u128).filter(|g| (first..=last).contains(g));
    match gw {
        Some(g) => {
            if g > first {
                pools.push(AllocationPool {
                    start: from_u128(first, like),
                    end: from_u128(g - 1, like),
                });
            }
            if g < last {
                pools.push(AllocationPool {
                    start: from_u128(g + 1, like),
                    end: from_u128(last, like),
                });
            }
        }
        None => pools.push(AllocationPool {
            start: from_u128(first, like),
            end: from_u128(last, like),
        }),
    }
    if pools.is_empty() {
        return Err(IpamError::TooSmall(cidr));
    }
    Ok(pools)
}

/// Checks explicit pools: inside the subnet's usable range, non-empty, disjoint, not holding the gateway.
pub fn validate_pools(
    cidr: IpNet,
    gateway: Option<IpAddr>,
    pools: &[AllocationPool],
) -> Result<(), IpamError> {
    let mut ranges: Vec<(u128, u128, &AllocationPool)> = Vec::with_capacity(pools.len());
    for pool in pools {
        check_address(cidr, pool.start, "allocation pool start")?;
        check_address(cidr, pool.end, "allocation pool end")?;
        let (start, end) = (to_u128(pool.start), to_u128(pool.end));
        if start > end {
            return Err(IpamError::EmptyPool {
                start: pool.start,
                end: pool.end,
            });
        }
        ranges.push((start, end, pool));
    }
    ranges.sort_by_key(|r| r.0);
    for pair in ranges.windows(2) {
        if pair[1].0 <= pair[0].1 {
            return Err(IpamError::OverlappingPools(
                pool_text(pair[0].2),
                pool_text(pair[1].2),
            ));
        }
    }
    if let Some(gw) = gateway {
        let g = to_u128(gw);
        if let Some((_, _, pool)) = ranges.iter().find(|(s, e, _)| (*s..=*e).contains(&g)) {
            return Err(IpamError::GatewayInPool {
                gateway: gw,
                pool: pool_text(pool),
            });
        }
    }
    Ok(())
}

/// The lowest address in `pools` not in `allocated`, if any.
pub fn lowest_free(pools: &[AllocationPool], allocated: &BTreeSet<IpAddr>) -> Option<IpAddr> {
    let mut sorted: Vec<&AllocationPool> = pools.iter().collect();
    sorted.sort_by_key(|p| to_u128(p.start));
    for pool in sorted {
        let (start, end) = (to_u128(pool.start), to_u128(pool.end));
        let mut candidate = start;
        for taken in allocated.range(pool.start..=pool.end) {
            let taken = to_u128(*taken);
            if taken == candidate {
                candidate += 1;
            } else if taken > candidate {
                break;
            }
        }
        if candidate <= end {
            return Some(from_u128(candidate, pool.start));
        }
    }
    None
}

/// Whether `ip` lies in one of `pools`.
pub fn in_pools(pools: &[AllocationPool], ip: IpAddr) -> bool {
    let v = to_u128(ip);
    pools.iter().any(|p| {
        p.start.is_ipv4() == ip.is_ipv4() && (to_u128(p.start)..=to_u128(p.end)).contains(&v)
    })
}

/// Whether two prefixes share any address.
pub fn overlaps(a: IpNet, b: IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn pool(a: &str, b: &str) -> AllocationPool {
        AllocationPool {
            start: ip(a),
            end: ip(b),
        }
    }

    #[test]
    fn default_pools_skip_network_broadcast_and_gateway() {
        assert_eq!(
            default_pools(net("10.0.0.0/24"), Some(ip("10.0.0.1"))).expect("pools"),
            vec![pool("10.0.0.2", "10.0.0.254")]
        );
        assert_eq!(
            default_pools(net("10.0.0.0/24"), Some(ip("10.0.0.100"))).expect("pools"),
            vec![
                pool("10.0.0.1", "10.0.0.99"),
                pool("10.0.0.101", "10.0.0.254")
            ]
        );
        assert_eq!(
            default_pools(net("fd00::/64"), Some(ip("fd00::1"))).expect("pools"),
            vec![pool("fd00::2", "fd00::ffff:ffff:ffff:ffff")]
        );
        assert_eq!(
            default_pools(net("10.0.0.0/32"), None),
            Ok(vec![pool("10.0.0.0", "10.0.0.0")])
        );
        assert!(
            matches!(default_pools(net("10.0.0.4/31"), Some(ip("10.0.0.4"))), Ok(p) if p == vec![pool("10.0.0.5", "10.0.0.5")])
        );
        assert!(matches!(
            default_pools(net("10.0.0.0/32"), Some(ip("10.0.0.0"))),
            Err(IpamError::TooSmall(_))
        ));
    }

    #[test]
    fn pools_outside_overlapping_or_holding_the_gateway_are_refused() {
        let cidr = net("192.168.1.0/24");
        let gw = Some(ip("192.168.1.1"));
        assert!(
            validate_pools(
                cidr,
                gw,
                &[
                    pool("192.168.1.10", "192.168.1.20"),
                    pool("192.168.1.30", "192.168.1.40")
                ]
            )
            .is_ok()
        );
        assert!(matches!(
            validate_pools(cidr, gw, &[pool("192.168.1.10", "192.168.2.5")]),
            Err(IpamError::OutsideSubnet { .. })
        ));
        assert!(matches!(
            validate_pools(cidr, gw, &[pool("192.168.1.20", "192.168.1.10")]),
            Err(IpamError::EmptyPool { .. })
        ));
        assert!(matches!(
            validate_pools(
                cidr,
                gw,
                &[
                    pool("192.168.1.10", "192.168.1.20"),
                    pool("192.168.1.20", "192.168.1.30")
                ]
            ),
            Err(IpamError::OverlappingPools(..))
        ));
        assert!(matches!(
            validate_pools(cidr, gw, &[pool("192.168.1.1", "192.168.1.9")]),
            Err(IpamError::GatewayInPool { .. })
        ));
        assert!(matches!(
            validate_pools(cidr, None, &[pool("192.168.1.0", "192.168.1.9")]),
            Err(IpamError::Reserved {
                which: "network",
                ..
            })
        ));
        assert!(matches!(
            validate_pools(cidr, None, &[pool("192.168.1.9", "192.168.1.255")]),
            Err(IpamError::Reserved {
                which: "broadcast",
                ..
            })
        ));
    }

    #[test]
    fn lowest_free_skips_taken_addresses_across_pools() {
        let pools = [pool("10.0.0.10", "10.0.0.11"), pool("10.0.0.2", "10.0.0.3")];
        let mut taken = BTreeSet::new();
        assert_eq!(lowest_free(&pools, &taken), Some(ip("10.0.0.2")));
        taken.extend([ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.10")]);
        assert_eq!(lowest_free(&pools, &taken), Some(ip("10.0.0.11")));
        taken.insert(ip("10.0.0.11"));
        assert_eq!(lowest_free(&pools, &taken), None, "exhausted");
    }

    #[test]
    fn lowest_free_works_in_huge_ipv6_pools() {
        let pools = [pool("fd00::2", "fd00::ffff:ffff:ffff:ffff")];
        let taken: BTreeSet<IpAddr> = (2..1000u128)
            .map(|i| from_u128(i + to_u128(ip("fd00::")), ip("fd00::")))
            .collect();
        assert_eq!(lowest_free(&pools, &taken), Some(ip("fd00::3e8")));
    }

    #[test]
    fn addresses_are_checked_against_family_prefix_and_reserved_addresses() {
        let cidr = net("10.1.0.0/16");
        assert!(check_address(cidr, ip("10.1.2.3"), "fixed ip").is_ok());
        assert!(matches!(
            check_address(cidr, ip("10.2.0.1"), "fixed ip"),
            Err(IpamError::OutsideSubnet { .. })
        ));
        assert!(matches!(
            check_address(cidr, ip("fd00::1"), "fixed ip"),
            Err(IpamError::WrongFamily { .. })
        ));
        assert!(matches!(
            check_address(cidr, ip("10.1.255.255"), "fixed ip"),
            Err(IpamError::Reserved {
                which: "broadcast",
                ..
            })
        ));
    }

    #[test]
    fn overlap_is_symmetric_and_catches_containment() {
        assert!(overlaps(net("10.0.0.0/16"), net("10.0.5.0/24")));
        assert!(overlaps(net("10.0.5.0/24"), net("10.0.0.0/16")));
        assert!(!overlaps(net("10.0.0.0/24"), net("10.0.1.0/24")));
    }

    proptest::proptest! {
        #[test]
        fn allocations_from_default_pools_are_usable_and_distinct(prefix in 22u8..30, count in 1usize..40) {
            let cidr = IpNet::new(ip("10.20.0.0"), prefix).expect("cidr").trunc();
            let gw = from_u128(to_u128(cidr.network()) + 1, cidr.addr());
            let pools = default_pools(cidr, Some(gw)).expect("pools");
            let mut taken = BTreeSet::new();
            for _ in 0..count {
                let Some(next) = lowest_free(&pools, &taken) else { break };
                proptest::prop_assert!(check_address(cidr, next, "x").is_ok());
                proptest::prop_assert!(next != gw);
                proptest::prop_assert!(taken.insert(next));
            }
        }
    }
}
