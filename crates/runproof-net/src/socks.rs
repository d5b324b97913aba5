//! SOCKS5 wire parsing (RFC 1928), pure functions over byte buffers so they can
//! be fuzzed. Only what the proxy serves: the no-authentication method and the
//! CONNECT command, with IPv4, IPv6 or domain-name addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const VERSION: u8 = 5;
pub const METHOD_NO_AUTH: u8 = 0x00;
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
pub const CMD_CONNECT: u8 = 0x01;

/// Reply codes (RFC 1928 section 6).
pub mod reply {
    pub const SUCCEEDED: u8 = 0x00;
    pub const GENERAL_FAILURE: u8 = 0x01;
    pub const NOT_ALLOWED: u8 = 0x02;
    pub const HOST_UNREACHABLE: u8 = 0x04;
    pub const CONNECTION_REFUSED: u8 = 0x05;
    pub const COMMAND_NOT_SUPPORTED: u8 = 0x07;
    pub const ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SocksError {
    #[error("not a SOCKS5 message: version byte {0:#04x}")]
    BadVersion(u8),
    #[error("SOCKS5 greeting offers no methods")]
    NoMethods,
    #[error("SOCKS5 reserved byte is {0:#04x}, must be 0")]
    BadReserved(u8),
    #[error("SOCKS5 address type {0:#04x} is not supported")]
    BadAddressType(u8),
    #[error("SOCKS5 domain name is empty or not UTF-8")]
    BadDomain,
}

/// The address a SOCKS5 client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocksHost {
    Ip(IpAddr),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocksRequest {
    pub command: u8,
    pub host: SocksHost,
    pub port: u16,
}

/// Parse the client greeting `VER NMETHODS METHODS...`. `Ok(None)` means more
/// bytes are needed; `Ok(Some((methods, consumed)))` otherwise.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, SocksError> {
    let Some(&ver) = buf.first() else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(SocksError::BadVersion(ver));
    }
    let Some(&n) = buf.get(1) else {
        return Ok(None);
    };
    if n == 0 {
        return Err(SocksError::NoMethods);
    }
    let end = 2 + n as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((buf[2..end].to_vec(), end)))
}

/// Parse a request `VER CMD RSV ATYP DST.ADDR DST.PORT`.
pub fn parse_request(buf: &[u8]) -> Result<Option<(SocksRequest, usize)>, SocksError> {
    if buf.len() < 4 {
        if let Some(&v) = buf.first()
            && v != VERSION
        {
            return Err(SocksError::BadVersion(v));
        }
        return Ok(None);
    }
    if buf[0] != VERSION {
        return Err(SocksError::BadVersion(buf[0]));
    }
    if buf[2] != 0 {
        return Err(SocksError::BadReserved(buf[2]));
    }
    let command = buf[1];
    let (host, addr_end) = match buf[3] {
        0x01 => {
            if buf.len() < 8 {
                return Ok(None);
            }
            let ip = Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
            (SocksHost::Ip(IpAddr::V4(ip)), 8)
        }
        0x04 => {
            if buf.len() < 20 {
                return Ok(None);
            }
            let mut o = [0u8; 16];
            o.copy_from_slice(&buf[4..20]);
            (SocksHost::Ip(IpAddr::V6(Ipv6Addr::from(o))), 20)
        }
        0x03 => {
            let Some(&len) = buf.get(4) else {
                return Ok(None);
            };
            if len == 0 {
                return Err(SocksError::BadDomain);
            }
            let end = 5 + len as usize;
            if buf.len() < end {
                return Ok(None);
            }
            let name = std::str::from_utf8(&buf[5..end]).map_err(|_| SocksError::BadDomain)?;
            (SocksHost::Name(name.to_string()), end)
        }
        other => return Err(SocksError::BadAddressType(other)),
    };
    if buf.len() < addr_end + 2 {
        return Ok(None);
    }
    let port = u16::from_be_bytes([buf[addr_end], buf[addr_end + 1]]);
    Ok(Some((
        SocksRequest {
            command,
            host,
            port,
        },
        addr_end + 2,
    )))
}

/// A reply with the given code and an all-zero IPv4 bound address.
pub fn reply_bytes(code: u8) -> [u8; 10] {
    [VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_incremental_and_complete() {
        assert_eq!(parse_greeting(&[]), Ok(None));
        assert_eq!(parse_greeting(&[5]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 0]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 0, 2, 9]), Ok(Some((vec![0, 2], 4))));
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(SocksError::BadVersion(4)));
        assert_eq!(parse_greeting(&[5, 0]), Err(SocksError::NoMethods));
    }

    #[test]
    fn request_with_each_address_type() {
        let r = parse_request(&[5, 1, 0, 1, 1, 2, 3, 4, 0x01, 0xbb])
            .unwrap()
            .unwrap();
        assert_eq!(r.0.host, SocksHost::Ip("1.2.3.4".parse().unwrap()));
        assert_eq!((r.0.port, r.1), (443, 10));
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&"::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0, 80]);
        let r = parse_request(&v6).unwrap().unwrap();
        assert_eq!(r.0.host, SocksHost::Ip("::1".parse().unwrap()));
        let mut d = vec![5, 1, 0, 3, 11];
        d.extend_from_slice(b"example.com");
        d.extend_from_slice(&[0, 80, 0xaa]);
        let r = parse_request(&d).unwrap().unwrap();
        assert_eq!(r.0.host, SocksHost::Name("example.com".into()));
        assert_eq!((r.0.port, r.1), (80, d.len() - 1));
        for cut in 0..d.len() - 1 {
            assert_eq!(parse_request(&d[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn request_errors() {
        assert_eq!(parse_request(&[4, 1, 0, 1]), Err(SocksError::BadVersion(4)));
        assert_eq!(
            parse_request(&[5, 1, 9, 1]),
            Err(SocksError::BadReserved(9))
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 7]),
            Err(SocksError::BadAddressType(7))
        );
        assert_eq!(parse_request(&[5, 1, 0, 3, 0]), Err(SocksError::BadDomain));
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 1, 0xff, 0, 1]),
            Err(SocksError::BadDomain)
        );
    }
}
