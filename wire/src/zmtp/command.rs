//! ZMTP commands (a frame with the COMMAND flag: a name-size byte, the name, then data) and the
//! metadata READY carries: properties of a name (1–255 bytes of `[A-Za-z0-9-_.+]`) and a value
//! (a 4-byte network-order size, then bytes).

use super::error::ZmtpError;

/// The two ZeroMQ socket types a brigade link has: the sender PUSHes, the receiver PULLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketType {
    Push,
    Pull,
}

impl SocketType {
    pub fn name(self) -> &'static str {
        match self {
            SocketType::Push => "PUSH",
            SocketType::Pull => "PULL",
        }
    }

    /// The only socket type this one talks to.
    pub fn peer(self) -> SocketType {
        match self {
            SocketType::Push => SocketType::Pull,
            SocketType::Pull => SocketType::Push,
        }
    }
}

/// READY's properties, in order.
pub type Metadata = Vec<(String, Vec<u8>)>;

/// A property's value (names compare case-insensitively, as in ZMTP).
pub fn property<'a>(meta: &'a Metadata, name: &str) -> Option<&'a [u8]> {
    meta.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| &v[..])
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ready(Metadata),
    Error(String),
    /// A heartbeat: answer with PONG carrying `context` (TTL in tenths of a second).
    Ping {
        ttl: u16,
        context: Vec<u8>,
    },
    Pong {
        context: Vec<u8>,
    },
    /// Any other command (SUBSCRIBE, CURVE's HELLO, …), by name.
    Other(String),
}

fn malformed(what: &'static str, why: impl Into<String>) -> ZmtpError {
    ZmtpError::Malformed {
        what,
        why: why.into(),
    }
}

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
}

impl Command {
    /// The command's frame body.
    pub fn encode(&self) -> Vec<u8> {
        let (name, data): (&str, Vec<u8>) = match self {
            Command::Ready(meta) => ("READY", encode_metadata(meta)),
            Command::Error(reason) => {
                let r = &reason.as_bytes()[..reason.len().min(255)];
                let mut d = vec![r.len() as u8];
                d.extend_from_slice(r);
                ("ERROR", d)
            }
            Command::Ping { ttl, context } => {
                let mut d = ttl.to_be_bytes().to_vec();
                d.extend_from_slice(&context[..context.len().min(16)]);
                ("PING", d)
            }
            Command::Pong { context } => ("PONG", context[..context.len().min(16)].to_vec()),
            Command::Other(name) => (name.as_str(), Vec::new()),
        };
        let mut body = vec![name.len() as u8];
        body.extend_from_slice(name.as_bytes());
        body.extend(data);
        body
    }

    /// Parses a command frame's body; every length is checked against what is there.
    pub fn decode(body: &[u8]) -> Result<Command, ZmtpError> {
        let (&n, rest) = body
            .split_first()
            .ok_or_else(|| malformed("command", "an empty command frame"))?;
        let n = n as usize;
        if rest.len() < n || !valid_name(&rest[..n]) {
            let shown = &body[..body.len().min(16)];
            return Err(malformed(
                "command",
                format!("name of {n} bytes in {shown:02x?}…"),
            ));
        }
        let (name, data) = rest.split_at(n);
        let name = String::from_utf8_lossy(name).into_owned();
        Ok(match name.as_str() {
            "READY" => Command::Ready(decode_metadata(data)?),
            "ERROR" => {
                let (&len, reason) = data
                    .split_first()
                    .ok_or_else(|| malformed("ERROR", "no reason"))?;
                if reason.len() != len as usize {
                    return Err(malformed("ERROR", "reason length"));
                }
                Command::Error(String::from_utf8_lossy(reason).into_owned())
            }
            "PING" => {
                if data.len() < 2 || data.len() > 2 + 16 {
                    return Err(malformed("PING", format!("{} data bytes", data.len())));
                }
                Command::Ping {
                    ttl: u16::from_be_bytes([data[0], data[1]]),
                    context: data[2..].to_vec(),
                }
            }
            "PONG" => {
                if data.len() > 16 {
                    return Err(malformed("PONG", "context over 16 bytes"));
                }
                Command::Pong {
                    context: data.to_vec(),
                }
            }
            _ => Command::Other(name),
        })
    }
}

/// READY's data.
pub fn encode_metadata(meta: &Metadata) -> Vec<u8> {
    let mut d = Vec::new();
    for (name, value) in meta {
        debug_assert!(valid_name(name.as_bytes()), "property name {name:?}");
        d.push(name.len() as u8);
        d.extend_from_slice(name.as_bytes());
        d.extend((value.len() as u32).to_be_bytes());
        d.extend_from_slice(value);
    }
    d
}

pub fn decode_metadata(mut d: &[u8]) -> Result<Metadata, ZmtpError> {
    let mut meta = Vec::new();
    while let Some((&n, rest)) = d.split_first() {
        let n = n as usize;
        if rest.len() < n + 4 || !valid_name(&rest[..n]) {
            return Err(malformed("metadata", "a property name"));
        }
        let name = String::from_utf8_lossy(&rest[..n]).into_owned();
        let len = u32::from_be_bytes(rest[n..n + 4].try_into().expect("4 bytes")) as usize;
        let rest = &rest[n + 4..];
        if rest.len() < len {
            return Err(malformed(
                "metadata",
                format!(
                    "property {name} declares {len} bytes, {} remain",
                    rest.len()
                ),
            ));
        }
        meta.push((name, rest[..len].to_vec()));
        d = &rest[len..];
    }
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        let meta: Metadata = vec![
            ("Socket-Type".into(), b"PUSH".to_vec()),
            ("X-Brigade-Rank".into(), b"3".to_vec()),
            ("Identity".into(), Vec::new()),
        ];
        for c in [
            Command::Ready(meta.clone()),
            Command::Error("no".into()),
            Command::Ping {
                ttl: 30,
                context: b"ctx".to_vec(),
            },
            Command::Pong {
                context: b"ctx".to_vec(),
            },
            Command::Other("SUBSCRIBE".into()),
        ] {
            assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        }
        // The bytes libzmq sends for a PULL socket's READY.
        let libzmq = b"\x05READY\x0bSocket-Type\x00\x00\x00\x04PULL";
        let Command::Ready(m) = Command::decode(libzmq).unwrap() else {
            panic!("a READY")
        };
        assert_eq!(property(&m, "socket-type"), Some(&b"PULL"[..]));
        assert_eq!(property(&m, "Identity"), None);
    }

    #[test]
    fn lengths_are_checked_against_what_is_there() {
        let table: [&[u8]; 8] = [
            b"",
            b"\x05REA",
            b"\x00",
            b"\x05READY\x0bSocket-Type\xff\xff\xff\xffPULL",
            b"\x05READY\x0bSocket-Type\x00\x00",
            b"\x05READY\x02a b\x00\x00\x00\x00",
            b"\x05ERROR\x09short",
            b"\x04PING\x00",
        ];
        for body in table {
            assert!(Command::decode(body).is_err(), "{body:02x?}");
        }
    }
}
