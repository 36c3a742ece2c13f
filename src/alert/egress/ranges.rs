//! Which destination addresses gate and webhook calls may connect to: pure range logic (no IO).
//!
//! Blocked by default: loopback, link-local (where clouds serve instance metadata and
//! credentials, 169.254.169.254), the unspecified address, and the cloud metadata addresses
//! outside those ranges. The operator adds ranges with `--egress-deny` and opens ranges with
//! `--egress-allow`. The **narrowest** range containing an address decides; on a tie the allow
//! wins, so `--egress-allow 127.0.0.0/8` opens loopback, while `--egress-allow 0.0.0.0/0` does
//! not open the narrower link-local range. IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are
//! checked as the IPv4 address they carry.

use ipnet::IpNet;
use std::net::IpAddr;

/// A range refused unless an allowed range at least as narrow contains the address.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Blocked {
    net: IpNet,
    /// Why it is blocked: `loopback`, `link-local`, …, or `--egress-deny` for the operator's.
    why: &'static str,
}

/// The ranges blocked by default, with why: `(CIDR, reason)`.
pub const DEFAULT_BLOCKED: [(&str, &str); 8] = [
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    // Alibaba Cloud's instance metadata (outside link-local).
    ("100.100.100.200/32", "cloud metadata"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    // AWS instance metadata over IPv6 (outside link-local).
    ("fd00:ec2::254/128", "cloud metadata"),
];

/// Where gate and webhook calls may connect: the default blocked ranges, the operator's extra
/// blocked ranges and the operator's allowed ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    deny: Vec<Blocked>,
    allow: Vec<IpNet>,
}

impl Default for EgressPolicy {
    /// The default blocked ranges ([`DEFAULT_BLOCKED`]), nothing allowed on top.
    fn default() -> Self {
        let deny = DEFAULT_BLOCKED
            .iter()
            .map(|(cidr, why)| Blocked { net: cidr.parse().expect("valid built-in CIDR"), why })
            .collect();
        EgressPolicy { deny, allow: Vec::new() }
    }
}

/// A destination address the policy refuses. Names the address and the range, never the URL
/// (URLs may be secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("destination refused: {ip} is in a blocked range ({range}, {why}); allow it with --egress-allow")]
pub struct Refused {
    /// The address that would have been connected to.
    pub ip: IpAddr,
    /// The narrowest blocked range containing it.
    pub range: IpNet,
    /// `loopback`, `link-local`, `unspecified`, `cloud metadata` or `--egress-deny`.
    pub why: &'static str,
}

impl EgressPolicy {
    /// The defaults, plus `deny` (from `--egress-deny`) blocked and `allow` (from
    /// `--egress-allow`) opened.
    pub fn new(deny: &[IpNet], allow: &[IpNet]) -> Self {
        let mut p = EgressPolicy::default();
        p.deny.extend(deny.iter().map(|n| Blocked { net: canonical_net(*n), why: "--egress-deny" }));
        p.allow.extend(allow.iter().map(|n| canonical_net(*n)));
        p
    }

    /// Ok when a connection to `ip` is allowed; else the narrowest blocked range containing it.
    pub fn check(&self, ip: IpAddr) -> Result<(), Refused> {
        let addr = canonical(ip);
        let Some(blocked) =
            self.deny.iter().filter(|b| b.net.contains(&addr)).max_by_key(|b| b.net.prefix_len())
        else {
            return Ok(());
        };
        let opened =
            self.allow.iter().any(|a| a.contains(&addr) && a.prefix_len() >= blocked.net.prefix_len());
        if opened {
            Ok(())
        } else {
            Err(Refused { ip, range: blocked.net, why: blocked.why })
        }
    }
}

/// Parses an address range for `--egress-deny` / `--egress-allow`: a CIDR (`10.0.0.0/8`,
/// `fd00::/8`; host bits are cleared) or a single address (`10.1.2.3`, `::1`).
pub fn parse_range(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let net = match text.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match text.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(format!(
                "{text:?} is not an address range: use a CIDR such as 10.0.0.0/8 or fd00::/8, or one address"
            ))
            }
        },
    };
    Ok(net.trunc())
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; other addresses unchanged.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// `::ffff:a.b.c.d/n` (n ≥ 96) as `a.b.c.d/(n−96)`, so mapped ranges compare with IPv4 ones.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_or(net, |n| n.trunc()),
            None => net.trunc(),
        },
        _ => net.trunc(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        parse_range(s).unwrap()
    }

    fn refused_because(p: &EgressPolicy, addr: &str) -> Option<&'static str> {
        p.check(ip(addr)).err().map(|r| r.why)
    }

    #[test]
    fn loopback_link_local_unspecified_and_metadata_are_blocked_by_default() {
        let p = EgressPolicy::default();
        for (addr, why) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("::1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("100.100.100.200", "cloud metadata"),
            ("fd00:ec2::254", "cloud metadata"),
        ] {
            assert_eq!(refused_because(&p, addr), Some(why), "{addr}");
        }
    }

    #[test]
    fn ordinary_and_private_addresses_are_allowed_by_default() {
        let p = EgressPolicy::default();
        for addr in ["10.96.0.10", "192.168.1.1", "172.16.0.1", "93.184.216.34", "fd00::1", "2001:db8::1"] {
            assert_eq!(p.check(ip(addr)), Ok(()), "{addr}");
        }
        assert_eq!(p.check(ip("169.253.255.255")), Ok(()));
        assert_eq!(p.check(ip("128.0.0.1")), Ok(()));
        assert_eq!(p.check(ip("fec0::1")), Ok(()));
    }

    #[test]
    fn ipv4_mapped_ipv6_forms_are_checked_as_their_ipv4_address() {
        let p = EgressPolicy::default();
        assert_eq!(refused_because(&p, "::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(refused_because(&p, "::ffff:169.254.169.254"), Some("link-local"));
        assert_eq!(refused_because(&p, "::ffff:0.0.0.0"), Some("unspecified"));
        assert_eq!(p.check(ip("::ffff:10.0.0.1")), Ok(()));
        let opened = EgressPolicy::new(&[], &[net("127.0.0.0/8")]);
        assert_eq!(opened.check(ip("::ffff:127.0.0.1")), Ok(()));
        let mapped_allow = EgressPolicy::new(&[], &[net("::ffff:127.0.0.0/104")]);
        assert_eq!(mapped_allow.check(ip("127.0.0.1")), Ok(()));
    }

    #[test]
    fn the_refusal_names_the_address_and_range_never_more() {
        let r = EgressPolicy::default().check(ip("169.254.169.254")).unwrap_err();
        assert_eq!(
            r.to_string(),
            "destination refused: 169.254.169.254 is in a blocked range (169.254.0.0/16, link-local); allow it with --egress-allow"
        );
    }

    #[test]
    fn an_allowed_range_opens_only_what_it_contains() {
        let p = EgressPolicy::new(&[], &[net("127.0.0.0/8")]);
        assert_eq!(p.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(refused_because(&p, "169.254.169.254"), Some("link-local"));
        assert_eq!(refused_because(&p, "::1"), Some("loopback"), "IPv6 loopback is another range");
        assert_eq!(refused_because(&p, "0.0.0.0"), Some("unspecified"));
        let one = EgressPolicy::new(&[], &[net("127.0.0.1")]);
        assert_eq!(one.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(refused_because(&one, "127.0.0.2"), Some("loopback"));
    }

    #[test]
    fn a_wider_allow_does_not_open_a_narrower_blocked_range() {
        let p = EgressPolicy::new(&[], &[net("0.0.0.0/0"), net("::/0")]);
        assert_eq!(refused_because(&p, "169.254.169.254"), Some("link-local"));
        assert_eq!(refused_because(&p, "127.0.0.1"), Some("loopback"));
        let metadata = EgressPolicy::new(&[], &[net("169.254.169.254/32")]);
        assert_eq!(metadata.check(ip("169.254.169.254")), Ok(()));
    }

    #[test]
    fn operator_denied_ranges_are_refused_and_can_be_punched_through() {
        let p = EgressPolicy::new(&[net("10.0.0.0/8")], &[net("10.20.0.0/16")]);
        let r = p.check(ip("10.1.2.3")).unwrap_err();
        assert_eq!((r.range, r.why), (net("10.0.0.0/8"), "--egress-deny"));
        assert_eq!(p.check(ip("10.20.0.5")), Ok(()));
        let narrower_deny = EgressPolicy::new(&[net("10.20.0.5")], &[net("10.20.0.0/16")]);
        assert_eq!(refused_because(&narrower_deny, "10.20.0.5"), Some("--egress-deny"));
        assert_eq!(narrower_deny.check(ip("10.20.0.6")), Ok(()));
    }

    #[test]
    fn ranges_parse_as_cidrs_or_single_addresses_with_host_bits_cleared() {
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("10.1.2.3/8").to_string(), "10.0.0.0/8");
        assert_eq!(net(" 10.1.2.3 ").to_string(), "10.1.2.3/32");
        assert_eq!(net("::1").to_string(), "::1/128");
        assert_eq!(net("fd00::/8").to_string(), "fd00::/8");
        for bad in ["", "10.0.0.0/33", "10.0.0/8", "localhost", "::1/129", "10.0.0.0/"] {
            let e = parse_range(bad).unwrap_err();
            assert!(e.contains("is not an address range"), "{bad:?}: {e}");
        }
    }
}
