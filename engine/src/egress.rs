//! Egress policy for outbound HTTP (`api_call`): which destination addresses are refused by
//! default, and the allowlist that opens specific hosts, ports and networks.
//!
//! Pure: the HTTP adapter resolves names itself and asks [`PortAllow::check`] about every
//! address it would connect to (and about a literal IP in a URL, and about every redirect hop).
//!
//! Allowlist entries (config `[egress] allow`, a workflow's `egress.allow`):
//!
//! | entry | opens |
//! |---|---|
//! | `api.internal`, `localhost` | that host name, on any port, whatever it resolves to |
//! | `api.internal:8443` | that host name on that port only |
//! | `*.corp.example` | every subdomain of `corp.example` (not `corp.example` itself) |
//! | `127.0.0.1`, `::1`, `[::1]` | that address, on any port, however it is reached |
//! | `127.0.0.1:8080`, `[::1]:8080` | that address on that port only |
//! | `10.0.0.0/8`, `fd00::/8` | every address of that network, on any port |
//!
//! Only refused addresses need an entry: public addresses are always reachable.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// Why an address is refused unless an allowlist entry opens it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Restricted {
    Unspecified,
    Loopback,
    LinkLocal,
    /// A cloud metadata endpoint (169.254.169.254, fd00:ec2::254).
    Metadata,
    /// RFC 1918, IPv6 unique-local and site-local.
    Private,
    /// Carrier-grade NAT, 100.64.0.0/10.
    SharedCgnat,
    Multicast,
    Broadcast,
    /// Special-purpose ranges that are not globally routable (benchmarking, 240/4, Teredo…).
    Reserved,
    Documentation,
}

impl Restricted {
    /// "a loopback address", for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Restricted::Unspecified => "an unspecified address",
            Restricted::Loopback => "a loopback address",
            Restricted::LinkLocal => "a link-local address",
            Restricted::Metadata => "a link-local cloud metadata address",
            Restricted::Private => "a private address",
            Restricted::SharedCgnat => "a shared (carrier-grade NAT) address",
            Restricted::Multicast => "a multicast address",
            Restricted::Broadcast => "the broadcast address",
            Restricted::Reserved => "a reserved address",
            Restricted::Documentation => "a documentation address",
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

const fn v6(s: [u16; 8], len: u8) -> Ipv6Net {
    Ipv6Net::new_assert(Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]), len)
}

/// IPv4 special-purpose ranges, most specific first (the first match names the reason).
const V4_RESTRICTED: &[(Ipv4Net, Restricted)] = &[
    (v4(169, 254, 169, 254, 32), Restricted::Metadata),
    (v4(255, 255, 255, 255, 32), Restricted::Broadcast),
    (v4(0, 0, 0, 0, 8), Restricted::Unspecified),
    (v4(10, 0, 0, 0, 8), Restricted::Private),
    (v4(100, 64, 0, 0, 10), Restricted::SharedCgnat),
    (v4(127, 0, 0, 0, 8), Restricted::Loopback),
    (v4(169, 254, 0, 0, 16), Restricted::LinkLocal),
    (v4(172, 16, 0, 0, 12), Restricted::Private),
    (v4(192, 0, 0, 0, 24), Restricted::Reserved),
    (v4(192, 0, 2, 0, 24), Restricted::Documentation),
    (v4(192, 88, 99, 0, 24), Restricted::Reserved),
    (v4(192, 168, 0, 0, 16), Restricted::Private),
    (v4(198, 18, 0, 0, 15), Restricted::Reserved),
    (v4(198, 51, 100, 0, 24), Restricted::Documentation),
    (v4(203, 0, 113, 0, 24), Restricted::Documentation),
    (v4(224, 0, 0, 0, 4), Restricted::Multicast),
    (v4(240, 0, 0, 0, 4), Restricted::Reserved),
];

/// IPv6 special-purpose ranges that do not embed an IPv4 address, most specific first.
const V6_RESTRICTED: &[(Ipv6Net, Restricted)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), Restricted::Unspecified),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), Restricted::Loopback),
    (v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128), Restricted::Metadata),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), Restricted::Private),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), Restricted::Reserved),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), Restricted::Documentation),
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), Restricted::Reserved),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), Restricted::Private),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), Restricted::LinkLocal),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), Restricted::Private),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), Restricted::Multicast),
];

/// Why `ip` is refused by default, or `None` for a globally routable address. IPv6 forms that
/// carry an IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`,
/// 6to4 `2002::/16`) are judged by the IPv4 address they reach.
pub fn restricted(ip: IpAddr) -> Option<Restricted> {
    match ip {
        IpAddr::V4(a) => V4_RESTRICTED.iter().find(|(net, _)| net.contains(&a)).map(|(_, why)| *why),
        IpAddr::V6(a) => {
            if let Some(why) = V6_RESTRICTED.iter().find(|(net, _)| net.contains(&a)).map(|(_, why)| *why) {
                return Some(why);
            }
            embedded_v4(a).and_then(|inner| restricted(IpAddr::V4(inner)))
        }
    }
}

/// The IPv4 address an IPv6 address stands for, where it embeds one.
fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = a.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

/// What an allowlist entry names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Target {
    /// A host name, lower-case, without a trailing dot.
    Host(String),
    /// Every subdomain of this name (`*.name`).
    Subdomains(String),
    /// An address (a /32 or /128) or a network.
    Net(IpNet),
}

/// One allowlist entry: a host, a subdomain wildcard, an address or a network, with an
/// optional port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EgressRule {
    target: Target,
    port: Option<u16>,
}

impl FromStr for EgressRule {
    type Err = String;

    fn from_str(entry: &str) -> Result<Self, String> {
        let s = entry.trim();
        if s.is_empty() {
            return Err("an empty entry".into());
        }
        if s == "*" {
            return Err("`*` would open every address; name hosts, or networks such as 10.0.0.0/8".into());
        }
        if s.contains("://") {
            return Err(format!("`{s}` is a URL; write its host (and port), e.g. api.example.com:8443"));
        }
        if s.contains('/') {
            let net = IpNet::from_str(s).map_err(|_| {
                format!("`{s}` is not a network (write e.g. 10.0.0.0/8 or fd00::/8; a network takes no port)")
            })?;
            if net != net.trunc() {
                return Err(format!(
                    "`{s}` has address bits set past its /{} prefix; write {}",
                    net.prefix_len(),
                    net.trunc()
                ));
            }
            return Ok(Self { target: Target::Net(net), port: None });
        }
        if let Some(rest) = s.strip_prefix('[') {
            let (addr, after) = rest.split_once(']').ok_or_else(|| format!("`{s}`: `[` without a closing `]`"))?;
            let addr = Ipv6Addr::from_str(addr).map_err(|_| format!("`{s}`: `{addr}` is not an IPv6 address"))?;
            let port = match after {
                "" => None,
                _ => {
                    Some(port(s, after.strip_prefix(':').ok_or_else(|| format!("`{s}`: expected `:port` after `]`"))?)?)
                }
            };
            return Ok(Self { target: Target::Net(IpNet::from(IpAddr::V6(addr))), port });
        }
        if let Ok(ip) = IpAddr::from_str(s) {
            return Ok(Self { target: Target::Net(IpNet::from(ip.to_canonical())), port: None });
        }
        if let Ok(sock) = SocketAddrV4::from_str(s) {
            return Ok(Self {
                target: Target::Net(IpNet::from(IpAddr::V4(*sock.ip()))),
                port: Some(port(s, &sock.port().to_string())?),
            });
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((host, p)) if !host.contains(':') => (host, Some(port(s, p)?)),
            Some(_) => return Err(format!("`{s}`: an IPv6 address with a port goes in brackets, e.g. [::1]:8080")),
            None => (s, None),
        };
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, host),
        };
        let name = host_name(s, name)?;
        let target = if wildcard { Target::Subdomains(name) } else { Target::Host(name) };
        Ok(Self { target, port })
    }
}

fn port(entry: &str, p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("`{entry}`: `{p}` is not a port (1–65535)")),
        Ok(n) => Ok(n),
    }
}

/// A host name as the URL parser writes it: lower-case ASCII (punycode), no trailing dot.
fn host_name(entry: &str, name: &str) -> Result<String, String> {
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if !name.is_ascii() {
        return Err(format!("`{entry}`: write internationalised names in punycode (xn--…)"));
    }
    let ok_label = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(ok_label) {
        return Err(format!("`{entry}` is not a host name, address or network"));
    }
    Ok(name)
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let single = |n: &IpNet| n.prefix_len() == n.max_prefix_len();
        match (&self.target, self.port) {
            (Target::Host(h), None) => write!(f, "{h}"),
            (Target::Host(h), Some(p)) => write!(f, "{h}:{p}"),
            (Target::Subdomains(h), None) => write!(f, "*.{h}"),
            (Target::Subdomains(h), Some(p)) => write!(f, "*.{h}:{p}"),
            (Target::Net(n), None) if single(n) => write!(f, "{}", n.addr()),
            (Target::Net(n), None) => write!(f, "{n}"),
            (Target::Net(IpNet::V6(n)), Some(p)) => write!(f, "[{}]:{p}", n.addr()),
            (Target::Net(n), Some(p)) => write!(f, "{}:{p}", n.addr()),
        }
    }
}

/// A parsed allowlist (config and workflow entries together, or either alone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EgressAllow {
    rules: Vec<EgressRule>,
}

impl EgressAllow {
    /// Parse entries; on the first bad one, its index and what is wrong with it.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, (usize, String)> {
        let mut rules = entries
            .iter()
            .enumerate()
            .map(|(i, e)| e.as_ref().parse::<EgressRule>().map_err(|m| (i, m)))
            .collect::<Result<Vec<_>, _>>()?;
        rules.sort();
        rules.dedup();
        Ok(Self { rules })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[EgressRule] {
        &self.rules
    }

    /// Both lists' entries.
    pub fn union(&self, other: &EgressAllow) -> EgressAllow {
        let mut rules: Vec<EgressRule> = self.rules.iter().chain(&other.rules).cloned().collect();
        rules.sort();
        rules.dedup();
        Self { rules }
    }

    /// The entries that apply to connections to `port`, without their ports.
    pub fn for_port(&self, port: u16) -> PortAllow {
        let mut out = PortAllow::default();
        for rule in self.rules.iter().filter(|r| r.port.is_none_or(|p| p == port)) {
            match &rule.target {
                Target::Host(h) => out.hosts.insert(h.clone()),
                Target::Subdomains(h) => out.subdomains.insert(h.clone()),
                Target::Net(n) => out.nets.insert(*n),
            };
        }
        out
    }
}

/// The allowlist as it applies to one destination port: hosts, subdomain wildcards, networks.
/// Equal values behave the same, so an HTTP client can be shared by every request with one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortAllow {
    hosts: BTreeSet<String>,
    subdomains: BTreeSet<String>,
    nets: BTreeSet<IpNet>,
}

impl PortAllow {
    /// May a connection go to `addr`, reached through the name `host` (`None` for a literal
    /// IP in the URL)? Unrestricted addresses always may; restricted ones only when an entry
    /// names the host or contains the address.
    pub fn check(&self, host: Option<&str>, addr: IpAddr) -> Result<(), EgressDenied> {
        let Some(why) = restricted(addr) else { return Ok(()) };
        let canonical = addr.to_canonical();
        if self.nets.iter().any(|n| n.contains(&canonical) || n.contains(&addr)) {
            return Ok(());
        }
        if let Some(host) = host {
            let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
            let sub = |suffix: &String| {
                name.len() > suffix.len() + 1
                    && name.ends_with(suffix.as_str())
                    && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
            };
            if self.hosts.contains(&name) || self.subdomains.iter().any(sub) {
                return Ok(());
            }
        }
        let host =
            host.filter(|h| h.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>().is_err()).map(str::to_owned);
        Err(EgressDenied { host, addr, why })
    }
}

/// A destination the egress policy refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct EgressDenied {
    /// The host name that resolved to `addr` (none for a literal address).
    pub host: Option<String>,
    pub addr: IpAddr,
    pub why: Restricted,
}

impl fmt::Display for EgressDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(host) => write!(f, "{host} resolves to {}, {}", self.addr, self.why.describe())?,
            None => write!(f, "{} is {}", self.addr, self.why.describe())?,
        }
        f.write_str("; allow it with egress.allow")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refused_by_default() {
        let cases = [
            ("127.0.0.1", Restricted::Loopback),
            ("127.255.0.9", Restricted::Loopback),
            ("::1", Restricted::Loopback),
            ("0.0.0.0", Restricted::Unspecified),
            ("::", Restricted::Unspecified),
            ("10.1.2.3", Restricted::Private),
            ("172.16.0.1", Restricted::Private),
            ("172.31.255.255", Restricted::Private),
            ("192.168.1.1", Restricted::Private),
            ("100.64.0.1", Restricted::SharedCgnat),
            ("100.127.255.254", Restricted::SharedCgnat),
            ("169.254.169.254", Restricted::Metadata),
            ("169.254.1.1", Restricted::LinkLocal),
            ("fe80::1", Restricted::LinkLocal),
            ("febf::1", Restricted::LinkLocal),
            ("fc00::1", Restricted::Private),
            ("fd12:3456::1", Restricted::Private),
            ("fd00:ec2::254", Restricted::Metadata),
            ("224.0.0.1", Restricted::Multicast),
            ("ff02::1", Restricted::Multicast),
            ("255.255.255.255", Restricted::Broadcast),
            ("240.0.0.1", Restricted::Reserved),
            ("198.18.0.1", Restricted::Reserved),
            ("192.0.2.1", Restricted::Documentation),
            ("2001:db8::1", Restricted::Documentation),
            // IPv6 forms of IPv4 addresses are judged by the IPv4 address.
            ("::ffff:127.0.0.1", Restricted::Loopback),
            ("::ffff:169.254.169.254", Restricted::Metadata),
            ("::ffff:10.0.0.1", Restricted::Private),
            ("::127.0.0.1", Restricted::Loopback),
            ("64:ff9b::a9fe:a9fe", Restricted::Metadata),
            ("2002:7f00:1::", Restricted::Loopback),
            ("2002:c0a8:101::1", Restricted::Private),
        ];
        for (addr, why) in cases {
            assert_eq!(restricted(ip(addr)), Some(why), "{addr}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "169.255.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert_eq!(restricted(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn entries_parse_to_their_canonical_form() {
        for (entry, canonical) in [
            ("api.example.com", "api.example.com"),
            ("API.Example.com.", "api.example.com"),
            ("localhost:8080", "localhost:8080"),
            ("*.corp.example", "*.corp.example"),
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("::1", "::1"),
            ("[::1]", "::1"),
            ("[::1]:8080", "[::1]:8080"),
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("fd00::/8", "fd00::/8"),
            ("::ffff:127.0.0.1", "127.0.0.1"),
        ] {
            let rule: EgressRule = entry.parse().unwrap_or_else(|e| panic!("{entry}: {e}"));
            assert_eq!(rule.to_string(), canonical, "{entry}");
        }
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for (entry, says) in [
            ("", "empty"),
            ("*", "every address"),
            ("10.0.0.1/8", "write 10.0.0.0/8"),
            ("10.0.0.0/33", "not a network"),
            ("host:0", "not a port"),
            ("host:99999", "not a port"),
            ("host:http", "not a port"),
            ("fe80::1:8080:x", "in brackets"),
            ("[::1", "closing"),
            ("[::1]8080", "`:port`"),
            ("bad host", "not a host name"),
            ("exämple.com", "punycode"),
            ("http://example.com", "is a URL"),
        ] {
            let err = entry.parse::<EgressRule>().expect_err(entry);
            assert!(err.contains(says), "{entry}: {err}");
        }
        assert_eq!(EgressAllow::parse(&["ok.example", "10.0.0.1/8"]).unwrap_err().0, 1);
    }

    #[test]
    fn entries_open_hosts_addresses_networks_and_ports() {
        let allow = EgressAllow::parse(&[
            "localhost",
            "api.internal:8443",
            "*.corp.example",
            "127.0.0.2",
            "127.0.0.3:8080",
            "10.0.0.0/8",
            "[fd00::1]:9000",
        ])
        .unwrap();
        let on = |port| allow.for_port(port);
        let lo = ip("127.0.0.1");
        assert!(on(80).check(Some("localhost"), lo).is_ok(), "a host entry opens what the host resolves to");
        assert!(on(80).check(Some("LOCALHOST."), ip("::1")).is_ok());
        assert!(on(80).check(Some("other"), lo).is_err());
        assert!(on(80).check(None, lo).is_err(), "a host entry does not open the literal address");
        assert!(on(8443).check(Some("api.internal"), ip("10.9.9.9")).is_ok());
        assert!(
            on(9443).check(Some("api.internal"), ip("192.168.0.1")).is_err(),
            "a host:port entry is for that port only"
        );
        assert!(on(1).check(Some("db.corp.example"), ip("192.168.0.1")).is_ok());
        assert!(on(1).check(Some("corp.example"), ip("192.168.0.1")).is_err(), "a wildcard is for subdomains");
        assert!(on(1).check(Some("xcorp.example"), ip("192.168.0.1")).is_err());
        assert!(on(1).check(None, ip("127.0.0.2")).is_ok());
        assert!(
            on(1).check(Some("anything"), ip("127.0.0.2")).is_ok(),
            "an address entry opens the address however it is reached"
        );
        assert!(on(1).check(None, ip("::ffff:127.0.0.2")).is_ok(), "and its IPv4-mapped form");
        assert!(on(8080).check(None, ip("127.0.0.3")).is_ok());
        assert!(on(8081).check(None, ip("127.0.0.3")).is_err());
        assert!(on(1).check(None, ip("10.200.0.1")).is_ok());
        assert!(on(9000).check(None, ip("fd00::1")).is_ok());
        assert!(on(9001).check(None, ip("fd00::1")).is_err());
        assert!(on(1).check(None, ip("169.254.169.254")).is_err());
        assert!(
            EgressAllow::default().for_port(80).check(Some("example.com"), ip("93.184.215.14")).is_ok(),
            "public addresses need no entry"
        );
    }

    #[test]
    fn denials_name_host_address_and_reason() {
        let none = PortAllow::default();
        let err = none.check(None, ip("127.0.0.1")).unwrap_err();
        assert_eq!(err.to_string(), "127.0.0.1 is a loopback address; allow it with egress.allow");
        let err = none.check(Some("localhost"), ip("::1")).unwrap_err();
        assert_eq!(err.to_string(), "localhost resolves to ::1, a loopback address; allow it with egress.allow");
        let err = none.check(Some("169.254.169.254"), ip("169.254.169.254")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "169.254.169.254 is a link-local cloud metadata address; allow it with egress.allow"
        );
    }

    #[test]
    fn union_and_port_views_are_canonical() {
        let a = EgressAllow::parse(&["b.example", "a.example"]).unwrap();
        let b = EgressAllow::parse(&["a.example", "10.0.0.0/8"]).unwrap();
        assert_eq!(a.union(&b).rules().len(), 3);
        assert_eq!(
            a.for_port(80),
            EgressAllow::parse(&["a.example", "b.example:80", "b.example"]).unwrap().for_port(80)
        );
    }
}
