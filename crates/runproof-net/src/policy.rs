//! Egress policy: which hosts a sandbox may reach, and which addresses the
//! proxy will never connect to whatever name was asked for.
//!
//! Rules are written as `example.com`, `*.example.com`, `example.com:443`,
//! `1.2.3.4`, `[2001:db8::1]:443` or a preset such as `@pypi`. A rule prefixed
//! with `!` is a deny rule; deny rules win over allow rules. Wildcards match
//! strict subdomains only (`*.example.com` matches `a.example.com` and
//! `a.b.example.com`, not `example.com`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// Errors in a rule string, reported with the offending input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    #[error(
        "unknown preset {0:?}: known presets are @pypi, @npm, @crates, @debian, @goproxy, @github"
    )]
    UnknownPreset(String),
    #[error(
        "invalid host in rule {0:?}: use a domain such as example.com, a wildcard such as *.example.com, or an IP address"
    )]
    BadHost(String),
    #[error("invalid port in rule {0:?}: the port must be a number from 1 to 65535")]
    BadPort(String),
}

/// What a rule matches on the host side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// Exactly this (lower-case, no trailing dot) domain name.
    Exact(String),
    /// Any strict subdomain of this suffix (stored without the `*.`).
    Wildcard(String),
    /// Exactly this IP address, written as a literal by the client.
    Ip(IpAddr),
}

/// One allow or deny rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub host: HostPattern,
    /// `None` matches every port.
    pub port: Option<u16>,
}

/// Package-registry presets usable as `@name` in an allow list.
pub const PRESETS: &[(&str, &[&str])] = &[
    (
        "pypi",
        &[
            "pypi.org:443",
            "files.pythonhosted.org:443",
            "pypi.python.org:443",
        ],
    ),
    (
        "npm",
        &["registry.npmjs.org:443", "registry.yarnpkg.com:443"],
    ),
    (
        "crates",
        &[
            "crates.io:443",
            "index.crates.io:443",
            "static.crates.io:443",
        ],
    ),
    (
        "debian",
        &[
            "deb.debian.org:80",
            "deb.debian.org:443",
            "security.debian.org:80",
            "security.debian.org:443",
        ],
    ),
    (
        "goproxy",
        &[
            "proxy.golang.org:443",
            "sum.golang.org:443",
            "storage.googleapis.com:443",
        ],
    ),
    (
        "github",
        &[
            "github.com:443",
            "codeload.github.com:443",
            "objects.githubusercontent.com:443",
            "release-assets.githubusercontent.com:443",
            "raw.githubusercontent.com:443",
        ],
    ),
];

/// Normalise a host name: lower-case, no trailing dot. Returns `None` for
/// anything that is not a plausible DNS name (so it is never resolved).
pub fn normalize_host(host: &str) -> Option<String> {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.is_empty() || h.len() > 253 {
        return None;
    }
    let lower = h.to_ascii_lowercase();
    for label in lower.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        if label.starts_with('-') || label.ends_with('-') {
            return None;
        }
    }
    Some(lower)
}

/// Parse a host that may be an IP literal (IPv6 possibly in brackets).
fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let inner = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    inner.parse().ok()
}

impl Rule {
    /// Parse one rule (not a preset, not a `!` deny prefix).
    pub fn parse(input: &str) -> Result<Rule, RuleError> {
        let s = input.trim();
        // Split an optional port; IPv6 literals need brackets to carry one.
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let Some(end) = rest.find(']') else {
                return Err(RuleError::BadHost(input.to_string()));
            };
            let host = &s[..end + 2];
            let after = &rest[end + 1..];
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return Err(RuleError::BadHost(input.to_string())),
            }
        } else if s.matches(':').count() > 1 {
            (s, None) // bare IPv6 literal
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(RuleError::BadPort(input.to_string())),
            },
        };
        let host = if let Some(ip) = parse_ip_literal(host) {
            HostPattern::Ip(ip)
        } else if let Some(suffix) = host.strip_prefix("*.") {
            let n = normalize_host(suffix).ok_or_else(|| RuleError::BadHost(input.to_string()))?;
            // A wildcard over a bare TLD (`*.com`) is almost surely a mistake.
            if !n.contains('.') {
                return Err(RuleError::BadHost(input.to_string()));
            }
            HostPattern::Wildcard(n)
        } else {
            HostPattern::Exact(
                normalize_host(host).ok_or_else(|| RuleError::BadHost(input.to_string()))?,
            )
        };
        Ok(Rule { host, port })
    }

    /// Does this rule match the (already normalised) target?
    pub fn matches(&self, target: &Target, port: u16) -> bool {
        if let Some(p) = self.port
            && p != port
        {
            return false;
        }
        match (&self.host, target) {
            (HostPattern::Exact(e), Target::Name(n)) => e == n,
            (HostPattern::Wildcard(suffix), Target::Name(n)) => n
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            (HostPattern::Ip(a), Target::Ip(b)) => a == b,
            _ => false,
        }
    }
}

/// The host a client asked for, after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Name(String),
    Ip(IpAddr),
}

impl Target {
    /// Parse what a client sent as a host. `None` if it is neither an IP
    /// literal nor a valid DNS name.
    pub fn parse(host: &str) -> Option<Target> {
        if let Some(ip) = parse_ip_literal(host) {
            return Some(Target::Ip(ip));
        }
        normalize_host(host).map(Target::Name)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Name(n) => f.write_str(n),
            Target::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a request was allowed or refused; serialised into audit events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", content = "reason", rename_all = "snake_case")]
pub enum Decision {
    Allowed,
    Denied(String),
}

/// The egress policy of one sandbox run.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    /// Addresses exempted from the private-address guard. Empty by default;
    /// only tests (and deliberate local setups) put anything here.
    allow_private_addresses: Vec<IpAddr>,
    /// Connect timeout towards upstream hosts.
    pub connect_timeout: std::time::Duration,
    /// Most client connections the proxy serves at once; more wait in the
    /// listen backlog, so a sandbox cannot exhaust the host's descriptors.
    pub max_connections: usize,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        EgressPolicy {
            allow: Vec::new(),
            deny: Vec::new(),
            allow_private_addresses: Vec::new(),
            connect_timeout: std::time::Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

impl EgressPolicy {
    /// An empty policy: everything denied.
    pub fn deny_all() -> Self {
        Self::default()
    }

    /// Build from rule strings such as `["@pypi", "example.com", "!bad.example.com"]`.
    pub fn from_rules<S: AsRef<str>>(rules: &[S]) -> Result<Self, RuleError> {
        let mut p = Self::default();
        for r in rules {
            p.add(r.as_ref())?;
        }
        Ok(p)
    }

    /// Add one rule string (`!` prefix for deny, `@` for a preset).
    pub fn add(&mut self, rule: &str) -> Result<(), RuleError> {
        let rule = rule.trim();
        let (deny, body) = match rule.strip_prefix('!') {
            Some(b) => (true, b.trim()),
            None => (false, rule),
        };
        let parsed: Vec<Rule> = if let Some(name) = body.strip_prefix('@') {
            let (_, hosts) = PRESETS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .ok_or_else(|| RuleError::UnknownPreset(body.to_string()))?;
            hosts
                .iter()
                .map(|h| Rule::parse(h))
                .collect::<Result<_, _>>()?
        } else {
            vec![Rule::parse(body)?]
        };
        if deny {
            self.deny.extend(parsed);
        } else {
            self.allow.extend(parsed);
        }
        Ok(())
    }

    /// Exempt exactly these addresses from the private-address guard.
    ///
    /// This exists so tests can reach an upstream on 127.0.0.1; a real run
    /// should never need it. It opens only the addresses given, nothing else.
    pub fn allow_private_addresses_for_tests(mut self, addrs: &[IpAddr]) -> Self {
        self.allow_private_addresses.extend_from_slice(addrs);
        self
    }

    /// Decide on a host and port as asked for by the client, before any
    /// resolution. Names are resolved only after this says `Allowed`.
    pub fn decide(&self, target: &Target, port: u16) -> Decision {
        if port == 0 {
            return Decision::Denied("port 0 is never allowed".into());
        }
        if self.deny.iter().any(|r| r.matches(target, port)) {
            return Decision::Denied(format!("{target}:{port} matches a deny rule"));
        }
        if self.allow.iter().any(|r| r.matches(target, port)) {
            Decision::Allowed
        } else {
            Decision::Denied(format!("{target}:{port} is not in the allow list"))
        }
    }

    /// May the proxy connect to this resolved address?
    pub fn address_allowed(&self, ip: IpAddr) -> Result<(), String> {
        if self.allow_private_addresses.contains(&ip) {
            return Ok(());
        }
        match forbidden_reason(ip) {
            Some(why) => Err(format!("resolved address {ip} is {why}")),
            None => Ok(()),
        }
    }
}

/// Why an address is never a valid egress destination, or `None` if it is a
/// public unicast address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    let reason = match o {
        [0, ..] => "in 0.0.0.0/8 (this network)",
        [10, ..] => "private (10.0.0.0/8)",
        [100, b, ..] if (64..128).contains(&b) => "carrier-grade NAT (100.64.0.0/10)",
        [127, ..] => "loopback",
        [169, 254, 169, 254] => "a cloud metadata address",
        [169, 254, ..] => "link-local",
        [172, b, ..] if (16..32).contains(&b) => "private (172.16.0.0/12)",
        [192, 0, 0, _] => "IETF protocol assignments (192.0.0.0/24)",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation-only",
        [192, 88, 99, _] => "6to4 relay anycast",
        [192, 168, ..] => "private (192.168.0.0/16)",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking (198.18.0.0/15)",
        [a, ..] if a >= 224 => "multicast or reserved",
        _ => return None,
    };
    Some(reason)
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4).map(|_| "an IPv4-mapped address of a forbidden IPv4 address");
    }
    let s = ip.segments();
    // IPv4-compatible (deprecated) ::a.b.c.d
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        return Some("an IPv4-compatible address (deprecated)");
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        // NAT64 well-known prefix: judge the embedded IPv4 address.
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return forbidden_v4(v4).map(|_| "a NAT64 address of a forbidden IPv4 address");
    }
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return forbidden_v4(v4).map(|_| "a 6to4 address of a forbidden IPv4 address");
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some("Teredo (2001::/32)");
    }
    if s[0] == 0x2001 && s[1] == 0xdb8 {
        return Some("documentation-only (2001:db8::/32)");
    }
    if s[0] == 0xfd00 && s[1] == 0x0ec2 {
        return Some("a cloud metadata address (fd00:ec2::/32)");
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return Some("unique-local (fc00::/7)");
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return Some("link-local (fe80::/10)");
    }
    if (s[0] & 0xffc0) == 0xfec0 {
        return Some("site-local (fec0::/10, deprecated)");
    }
    if (s[0] & 0xff00) == 0xff00 {
        return Some("multicast");
    }
    if s[0] == 0x0100 && s[1..4] == [0, 0, 0] {
        return Some("discard-only (100::/64)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: &str) -> Target {
        Target::parse(h).unwrap()
    }

    #[test]
    fn exact_wildcard_port_and_deny() {
        let p = EgressPolicy::from_rules(&[
            "example.com",
            "*.cdn.example.org",
            "api.test.net:8443",
            "!evil.cdn.example.org",
        ])
        .unwrap();
        assert_eq!(p.decide(&t("example.com"), 443), Decision::Allowed);
        assert_eq!(p.decide(&t("EXAMPLE.com."), 80), Decision::Allowed);
        assert!(matches!(
            p.decide(&t("www.example.com"), 443),
            Decision::Denied(_)
        ));
        assert_eq!(p.decide(&t("a.cdn.example.org"), 443), Decision::Allowed);
        assert_eq!(p.decide(&t("a.b.cdn.example.org"), 443), Decision::Allowed);
        assert!(matches!(
            p.decide(&t("cdn.example.org"), 443),
            Decision::Denied(_)
        ));
        assert!(matches!(
            p.decide(&t("xcdn.example.org"), 443),
            Decision::Denied(_)
        ));
        assert!(
            matches!(p.decide(&t("evil.cdn.example.org"), 443), Decision::Denied(r) if r.contains("deny"))
        );
        assert_eq!(p.decide(&t("api.test.net"), 8443), Decision::Allowed);
        assert!(matches!(
            p.decide(&t("api.test.net"), 443),
            Decision::Denied(_)
        ));
    }

    #[test]
    fn presets_expand_and_unknown_preset_is_an_error() {
        let p = EgressPolicy::from_rules(&["@pypi", "@github"]).unwrap();
        assert_eq!(
            p.decide(&t("files.pythonhosted.org"), 443),
            Decision::Allowed
        );
        assert_eq!(p.decide(&t("github.com"), 443), Decision::Allowed);
        assert!(matches!(
            p.decide(&t("github.com"), 22),
            Decision::Denied(_)
        ));
        assert_eq!(
            EgressPolicy::from_rules(&["@nope"]).unwrap_err(),
            RuleError::UnknownPreset("@nope".into())
        );
        let deny = EgressPolicy::from_rules(&["@npm", "!registry.yarnpkg.com"]).unwrap();
        assert!(matches!(
            deny.decide(&t("registry.yarnpkg.com"), 443),
            Decision::Denied(_)
        ));
    }

    #[test]
    fn bad_rules_are_reported_with_input() {
        assert_eq!(
            Rule::parse("exa mple.com").unwrap_err(),
            RuleError::BadHost("exa mple.com".into())
        );
        assert_eq!(
            Rule::parse("a.com:0").unwrap_err(),
            RuleError::BadPort("a.com:0".into())
        );
        assert_eq!(
            Rule::parse("a.com:99999").unwrap_err(),
            RuleError::BadPort("a.com:99999".into())
        );
        assert_eq!(
            Rule::parse("*.com").unwrap_err(),
            RuleError::BadHost("*.com".into())
        );
        assert!(Rule::parse("*").is_err());
    }

    #[test]
    fn ip_rules_match_only_ip_literals() {
        let p = EgressPolicy::from_rules(&["203.0.114.7", "[2606:4700::1]:443"]).unwrap();
        assert_eq!(p.decide(&t("203.0.114.7"), 80), Decision::Allowed);
        assert_eq!(p.decide(&t("[2606:4700::1]"), 443), Decision::Allowed);
        assert!(matches!(
            p.decide(&t("2606:4700::1"), 80),
            Decision::Denied(_)
        ));
    }

    #[test]
    fn private_addresses_are_refused_by_default() {
        let p = EgressPolicy::deny_all();
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.1.1",
            "100.64.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(p.address_allowed(ip).is_err(), "{a} should be refused");
        }
        for a in [
            "93.184.215.14",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "172.32.0.1",
            "100.128.0.1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(p.address_allowed(ip).is_ok(), "{a} should be allowed");
        }
        let opened = EgressPolicy::deny_all()
            .allow_private_addresses_for_tests(&["127.0.0.1".parse().unwrap()]);
        assert!(opened.address_allowed("127.0.0.1".parse().unwrap()).is_ok());
        assert!(
            opened
                .address_allowed("127.0.0.2".parse().unwrap())
                .is_err()
        );
        assert!(opened.address_allowed("::1".parse().unwrap()).is_err());
    }

    #[test]
    fn hostile_host_strings_are_not_names() {
        for h in [
            "",
            "a..b",
            "a b",
            "a/b",
            "-a.com",
            "a.com\0",
            "a\r\nb",
            &"x".repeat(300),
        ] {
            assert!(Target::parse(h).is_none(), "{h:?}");
        }
    }
}
