//! 3.9 / 4.11 the pool of IP addresses allocated for the activity: IPv4 and
//! IPv6 addresses and CIDR ranges, public only (no private, loopback,
//! link-local, multicast, documentation or other non-global space), with no
//! overlaps inside one pool.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// An inclusive range of addresses, IPv4 held as IPv4-mapped IPv6 so both
/// families compare in one space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct IpRange {
    pub start: u128,
    pub end: u128,
}

impl IpRange {
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }

    /// 16 big-endian bytes each, for storage and byte-wise comparison.
    pub fn start_bytes(&self) -> [u8; 16] {
        self.start.to_be_bytes()
    }

    pub fn end_bytes(&self) -> [u8; 16] {
        self.end.to_be_bytes()
    }

    /// The prefix length of the CIDR block this range is, in the 128-bit
    /// space (an IPv4 /24 is 120).
    pub fn prefix(&self) -> u32 {
        (self.end - self.start).leading_zeros()
    }
}

/// One entry of a pool: the text as written and the range it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpBlock {
    /// Normalised CIDR text, e.g. `95.56.0.0/16` or `2a03:e2c0::/32`.
    pub cidr: String,
    pub range: IpRange,
}

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cidr)
    }
}

/// A validated pool: every block public, no two overlapping.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IpPool(Vec<IpBlock>);

impl IpPool {
    /// Parses every entry; on failure returns every problem as (index, reason).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<IpPool, Vec<(usize, String)>> {
        let mut problems = Vec::new();
        let mut blocks: Vec<(usize, IpBlock)> = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            match IpBlock::parse(entry.as_ref()) {
                Ok(block) => {
                    if let Some((j, earlier)) = blocks
                        .iter()
                        .find(|(_, earlier)| earlier.range.overlaps(&block.range))
                    {
                        problems.push((i, format!("{block} overlaps ip_pool[{j}] ({earlier})")));
                    } else {
                        blocks.push((i, block));
                    }
                }
                Err(reason) => problems.push((i, reason)),
            }
        }
        if problems.is_empty() {
            Ok(IpPool(blocks.into_iter().map(|(_, b)| b).collect()))
        } else {
            Err(problems)
        }
    }

    pub fn blocks(&self) -> &[IpBlock] {
        &self.0
    }
}

/// Address space that is not globally routable, with the reason it is refused.
const NON_GLOBAL_V4: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\" (RFC 791)"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared carrier-grade NAT space (RFC 6598)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link-local (RFC 3927)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation, TEST-NET-1 (RFC 5737)"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation, TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "documentation, TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("240.0.0.0/4", "reserved (RFC 1112), including broadcast"),
];

const NON_GLOBAL_V6: &[(&str, &str)] = &[
    ("::/128", "the unspecified address (RFC 4291)"),
    ("::1/128", "loopback (RFC 4291)"),
    (
        "::ffff:0:0/96",
        "IPv4-mapped (RFC 4291); give the IPv4 address itself",
    ),
    (
        "64:ff9b:1::/48",
        "local-use IPv4/IPv6 translation (RFC 8215)",
    ),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001::/23", "IETF protocol assignments (RFC 2928)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("2002::/16", "6to4 (RFC 3056)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("fc00::/7", "unique local (RFC 4193)"),
    ("fe80::/10", "link-local (RFC 4291)"),
    ("ff00::/8", "multicast (RFC 4291)"),
];

/// Global unicast IPv6 (RFC 4291): anything outside it is refused too.
const GLOBAL_UNICAST_V6: &str = "2000::/3";

impl IpBlock {
    /// An address (`95.56.1.1`, `2a03:e2c0::1`) or CIDR range
    /// (`95.56.0.0/16`) with no host bits set, in public address space.
    pub fn parse(text: &str) -> Result<IpBlock, String> {
        let text = text.trim();
        let (block, is_v4) = cidr(text)?;
        let (table, family) = if is_v4 {
            (NON_GLOBAL_V4, "IPv4")
        } else {
            (NON_GLOBAL_V6, "IPv6")
        };
        for (reserved, why) in table {
            let (reserved_block, _) = cidr(reserved).expect("table entries parse");
            if block.range.overlaps(&reserved_block.range) {
                return Err(format!(
                    "{block} is not public address space: it overlaps {reserved}, {why}"
                ));
            }
        }
        if !is_v4 {
            let (global, _) = cidr(GLOBAL_UNICAST_V6).expect("constant parses");
            if block.range.start < global.range.start || block.range.end > global.range.end {
                return Err(format!(
                    "{block} is not public address space: {family} global unicast is {GLOBAL_UNICAST_V6}"
                ));
            }
        }
        Ok(block)
    }
}

/// Parses `ADDR` or `ADDR/PREFIX` into a block (without the public-space check).
fn cidr(text: &str) -> Result<(IpBlock, bool), String> {
    let (addr_text, prefix_text) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
    let (value, bits, is_v4) = match addr {
        IpAddr::V4(v4) => (u128::from(v4.to_ipv6_mapped()), 32u32, true),
        IpAddr::V6(v6) => (u128::from(v6), 128u32, false),
    };
    let prefix = match prefix_text {
        None => bits,
        Some(p) => {
            let prefix: u32 = p
                .parse()
                .map_err(|_| format!("{text:?}: prefix length {p:?} is not a number"))?;
            if prefix > bits {
                return Err(format!(
                    "{text:?}: prefix length {prefix} is longer than {bits}"
                ));
            }
            prefix
        }
    };
    let host_bits = bits - prefix;
    let host_mask: u128 = if host_bits == 128 {
        u128::MAX
    } else {
        (1u128 << host_bits) - 1
    };
    if value & host_mask != 0 {
        let network = value & !host_mask;
        return Err(format!(
            "{text:?} has host bits set; the range is {}/{prefix}",
            render(network, is_v4)
        ));
    }
    let block = IpBlock {
        cidr: format!("{}/{prefix}", render(value, is_v4)),
        range: IpRange {
            start: value,
            end: value | host_mask,
        },
    };
    Ok((block, is_v4))
}

fn render(value: u128, is_v4: bool) -> String {
    if is_v4 {
        Ipv4Addr::from(value as u32).to_string()
    } else {
        Ipv6Addr::from(value).to_string()
    }
}

/// The start addresses of every CIDR block with one of `prefixes` (lengths)
/// that holds `first` and starts before it: `first` masked to each, once
/// each. A stored range overlapping a block either starts inside the block
/// or is one of these for its own prefix length.
pub fn covering_starts(first: u128, prefixes: impl IntoIterator<Item = u32>) -> Vec<u128> {
    let mut starts: Vec<u128> = prefixes
        .into_iter()
        .filter(|prefix| *prefix < 128)
        .map(|prefix| match prefix {
            0 => 0,
            _ => first & (u128::MAX << (128 - prefix)),
        })
        .filter(|start| *start != first)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_knows_its_prefix_length_in_the_128_bit_space() {
        let pool = IpPool::parse(&["95.56.0.0/16", "2.132.10.7", "2a03:e2c0:100::/40"]).unwrap();
        let prefixes: Vec<u32> = pool.blocks().iter().map(|b| b.range.prefix()).collect();
        assert_eq!(prefixes, [112, 128, 40]);
        assert_eq!(
            IpRange {
                start: 0,
                end: u128::MAX
            }
            .prefix(),
            0
        );
    }

    #[test]
    fn public_addresses_and_ranges_are_accepted_and_normalised() {
        let pool = IpPool::parse(&["95.56.0.0/16", "2.132.10.7", "2a03:e2c0:100::/40"]).unwrap();
        let cidrs: Vec<&str> = pool.blocks().iter().map(|b| b.cidr.as_str()).collect();
        assert_eq!(
            cidrs,
            ["95.56.0.0/16", "2.132.10.7/32", "2a03:e2c0:100::/40"]
        );
        let range = pool.blocks()[0].range;
        assert_eq!(
            range.start,
            u128::from(Ipv4Addr::new(95, 56, 0, 0).to_ipv6_mapped())
        );
        assert_eq!(
            range.end,
            u128::from(Ipv4Addr::new(95, 56, 255, 255).to_ipv6_mapped())
        );
    }

    #[test]
    fn every_non_global_range_is_refused_by_name() {
        let cases: &[(&str, &str)] = &[
            ("0.1.2.3", "0.0.0.0/8"),
            ("10.20.0.0/16", "10.0.0.0/8"),
            ("100.64.1.0/24", "100.64.0.0/10"),
            ("127.0.0.1", "127.0.0.0/8"),
            ("169.254.10.10", "169.254.0.0/16"),
            ("172.20.0.0/16", "172.16.0.0/12"),
            ("192.0.0.8", "192.0.0.0/24"),
            ("192.0.2.0/28", "192.0.2.0/24"),
            ("192.88.99.1", "192.88.99.0/24"),
            ("192.168.1.0/24", "192.168.0.0/16"),
            ("198.19.0.0/16", "198.18.0.0/15"),
            ("198.51.100.7", "198.51.100.0/24"),
            ("203.0.113.0/24", "203.0.113.0/24"),
            ("239.1.1.1", "224.0.0.0/4"),
            ("255.255.255.255", "240.0.0.0/4"),
            ("::", "::/128"),
            ("::1", "::1/128"),
            ("::ffff:95.56.0.1", "::ffff:0:0/96"),
            ("64:ff9b:1::/64", "64:ff9b:1::/48"),
            ("100::/64", "100::/64"),
            ("2001:0:1::/48", "2001::/23"),
            ("2001:db8::/48", "2001:db8::/32"),
            ("2002:5f38::/32", "2002::/16"),
            ("3fff:1::/32", "3fff::/20"),
            ("fd12:3456::/32", "fc00::/7"),
            ("fe80::1", "fe80::/10"),
            ("ff02::1", "ff00::/8"),
        ];
        for (input, reserved) in cases {
            let reason = IpBlock::parse(input).unwrap_err();
            assert!(
                reason.contains(&format!("it overlaps {reserved}, ")),
                "{input}: {reason}"
            );
        }
        // A broad range is refused when any part of it is not public.
        assert_eq!(
            IpBlock::parse("8.0.0.0/6").unwrap_err(),
            "8.0.0.0/6 is not public address space: it overlaps 10.0.0.0/8, private (RFC 1918)"
        );
        assert_eq!(
            IpBlock::parse("4000::/16").unwrap_err(),
            "4000::/16 is not public address space: IPv6 global unicast is 2000::/3"
        );
    }

    #[test]
    fn malformed_entries_and_overlaps_are_reported_with_their_index() {
        let problems = IpPool::parse(&[
            "95.56.0.0/16",
            "95.56.4.0/24",
            "95.57.0.1/24",
            "not-an-ip",
            "95.58.0.0/33",
            "2.132.0.0/16",
        ])
        .unwrap_err();
        assert_eq!(
            problems,
            vec![
                (
                    1,
                    "95.56.4.0/24 overlaps ip_pool[0] (95.56.0.0/16)".to_owned()
                ),
                (
                    2,
                    "\"95.57.0.1/24\" has host bits set; the range is 95.57.0.0/24".to_owned()
                ),
                (
                    3,
                    "\"not-an-ip\" is not an IP address or CIDR range".to_owned()
                ),
                (
                    4,
                    "\"95.58.0.0/33\": prefix length 33 is longer than 32".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn covering_starts_of_an_ipv4_block() {
        // 95.56.128.0 as IPv4-mapped IPv6 (::ffff:95.56.128.0).
        let first = u128::from(std::net::Ipv4Addr::new(95, 56, 128, 0).to_ipv6_mapped());
        let starts = covering_starts(first, 0..128);
        let v4 = |a, b, c, d| u128::from(std::net::Ipv4Addr::new(a, b, c, d).to_ipv6_mapped());
        // 95.56.0.0/16 holds it; 95.56.128.0 itself is not among them.
        assert!(starts.contains(&v4(95, 56, 0, 0)));
        assert!(starts.contains(&v4(95, 0, 0, 0)));
        assert!(starts.contains(&v4(64, 0, 0, 0)));
        assert!(!starts.contains(&first));
        assert!(!starts.contains(&v4(95, 56, 64, 0)));
        // One per distinct masked value: 0 (prefixes 0–80); one for each of
        // the 16 bits of ffff (prefixes 81–96); then, of the 10 bits set in
        // 95.56.128.0, each but the last (which gives the address itself).
        assert_eq!(starts.len(), 1 + 16 + 9);
        // Only the lengths asked for: /16 (112) gives 95.56.0.0, /24 (120)
        // the address itself, which is left out; 128 holds nothing shorter.
        assert_eq!(
            covering_starts(first, [120, 112, 0, 128]),
            [0, v4(95, 56, 0, 0)]
        );
    }
}
