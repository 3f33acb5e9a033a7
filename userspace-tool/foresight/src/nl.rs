// SPDX-License-Identifier: GPL-2.0
//! The generic netlink client of the foresight family.
//!
//! neli does the socket work, the family and multicast group resolution
//! (through its `NlRouter`), the building of messages and the parsing of
//! generic netlink headers and attributes.  What is done by hand here is
//! only what neli gets wrong or lacks:
//!
//! * error messages: with `NETLINK_CAP_ACK` the kernel echoes only the
//!   header of the failed request (flag `NLM_F_CAPPED`), after which come the
//!   extended-ack TLVs (flag `NLM_F_ACK_TLVS`); neli would parse the echoed
//!   request by its original length.  `NLMSG_DONE` of a failed dump carries
//!   the error code and TLVs the same way.
//! * the request/response loop (sequence numbers, multi-part dumps ended by
//!   `NLMSG_DONE`, the ACK of a `do`), on a plain blocking socket, so that
//!   errors such as `ENOBUFS` of a multicast listener are seen.

use std::fmt;
use std::io::{self, Cursor};
use std::os::fd::AsRawFd;
use std::time::Duration;

use neli::{
    attr::Attribute,
    consts::{
        nl::{NlmF, Nlmsg, NlmsgerrAttr},
        socket::{Msg, NlFamily},
    },
    err::{NlmsghdrAck, RouterError},
    genl::{AttrTypeBuilder, Genlmsghdr, GenlmsghdrBuilder, Nlattr, NlattrBuilder},
    nl::{NlPayload, NlmsghdrBuilder},
    router::synchronous::NlRouter,
    socket::NlSocket,
    types::{Buffer, GenlBuffer},
    utils::Groups,
    FromBytes, FromBytesWithInput, Size, ToBytes,
};

use crate::dev::DevSpec;
use crate::uapi;

/// How long a request waits for each message of its answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Receive buffer of a datagram.  Kernel dump messages are at most 32 KiB,
/// notifications are allocated by the kernel side; 1 MiB leaves room and a
/// larger datagram is reported as truncated.
const RECV_BYTES: usize = 1 << 20;
/// Socket receive buffer asked for by multicast listeners.
pub const LISTEN_RCVBUF: usize = 4 << 20;
/// Socket send buffer of requests (a full predict batch is ~150 KiB).
const SNDBUF: usize = 1 << 20;

const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
// Not in every libc release.
const NLMSGERR_ATTR_MISS_TYPE: u16 = 5;
const NLMSGERR_ATTR_MISS_NEST: u16 = 6;

/// Errors of the netlink client.
#[derive(Debug)]
pub enum Error {
    /// No generic netlink family "foresight".
    NotLoaded,
    /// The kernel answered with an error.
    Kernel {
        op: &'static str,
        errno: i32,
        msg: Option<String>,
    },
    /// A socket call failed.
    Io { op: String, err: io::Error },
    /// The kernel's answer made no sense.
    Protocol { op: String, msg: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            Error::Io { err, .. } => err.raw_os_error(),
            _ => None,
        }
    }

    fn io(op: impl Into<String>, err: io::Error) -> Self {
        Error::Io { op: op.into(), err }
    }

    fn proto(op: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Protocol {
            op: op.into(),
            msg: msg.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotLoaded => write!(
                f,
                "the dm-foresight module is not loaded, or this process is not in the host's \
                 initial network namespace, the only one foresight is controlled from (no \
                 generic netlink family \"{}\")",
                uapi::FAMILY_NAME
            ),
            Error::Kernel { op, errno, .. } if *errno == libc::EPERM => write!(
                f,
                "permission denied: {op} needs CAP_SYS_ADMIN in the host's initial user \
                 namespace, as device-mapper does (run as root on the host, not in a container)"
            ),
            Error::Kernel { op, errno, msg } => {
                let text = match msg {
                    Some(m) => m.clone(),
                    None => strerror(*errno),
                };
                write!(f, "{op}: {text} ({})", errno_name(*errno))
            }
            Error::Io { op, err } => match err.raw_os_error() {
                Some(e) => write!(f, "{op}: {} ({})", strerror(e), errno_name(e)),
                None => write!(f, "{op}: {err}"),
            },
            Error::Protocol { op, msg } => write!(f, "{op}: {msg}"),
        }
    }
}

impl std::error::Error for Error {}

/// The text of an errno, without Rust's " (os error N)".
pub fn strerror(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The symbolic name of an errno.
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::ENXIO => "ENXIO",
        libc::E2BIG => "E2BIG",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::ENODEV => "ENODEV",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ERANGE => "ERANGE",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::EPROTO => "EPROTO",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENOBUFS => "ENOBUFS",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ESTALE => "ESTALE",
        libc::ENODATA => "ENODATA",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::ECANCELED => "ECANCELED",
        libc::EROFS => "EROFS",
        libc::ENOTTY => "ENOTTY",
        524 => "ENOTSUPP",
        _ => return format!("errno {errno}"),
    };
    name.to_string()
}

// ---------------------------------------------------------------------------
// Attributes

/// A list of attributes as neli parses them.
pub type AttrList = GenlBuffer<u16, Buffer>;

/// Typed read access to a list of attributes.  Unknown attribute types are
/// simply never asked for; a known one of a wrong size is an error.
#[derive(Clone, Copy)]
pub struct Attrs<'a>(pub &'a [Nlattr<u16, Buffer>]);

impl<'a> Attrs<'a> {
    pub fn new(list: &'a AttrList) -> Self {
        Attrs(list.as_ref())
    }

    fn ty(a: &Nlattr<u16, Buffer>) -> u16 {
        *a.nla_type().nla_type()
    }

    /// The first attribute of a type.
    pub fn get(&self, t: u16) -> Option<&'a [u8]> {
        self.0
            .iter()
            .find(|a| Self::ty(a) == t)
            .map(|a| a.payload().as_ref())
    }

    /// All attributes of a type, in order (multi-attr).
    pub fn all(&self, t: u16) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0
            .iter()
            .filter(move |a| Self::ty(a) == t)
            .map(|a| a.payload().as_ref())
    }

    /// An unsigned integer of 1, 2, 4 or 8 bytes in host order.
    pub fn uint(&self, t: u16) -> Result<Option<u64>, String> {
        match self.get(t) {
            None => Ok(None),
            Some(p) => decode_uint(p)
                .map(Some)
                .ok_or_else(|| format!("attribute {t}: bad integer of {} bytes", p.len())),
        }
    }

    pub fn u64(&self, t: u16) -> Result<Option<u64>, String> {
        self.uint(t)
    }

    pub fn u32(&self, t: u16) -> Result<Option<u32>, String> {
        match self.uint(t)? {
            None => Ok(None),
            Some(v) => u32::try_from(v)
                .map(Some)
                .map_err(|_| format!("attribute {t}: {v} does not fit 32 bits")),
        }
    }

    pub fn u8(&self, t: u16) -> Result<Option<u8>, String> {
        match self.uint(t)? {
            None => Ok(None),
            Some(v) => u8::try_from(v)
                .map(Some)
                .map_err(|_| format!("attribute {t}: {v} does not fit 8 bits")),
        }
    }

    /// A string, up to its NUL.
    pub fn string(&self, t: u16) -> Option<String> {
        self.get(t).map(decode_string)
    }

    /// Parse the payload of a nested attribute.
    pub fn parse_nested(payload: &[u8]) -> Result<AttrList, String> {
        parse_attrs(payload)
    }
}

pub fn decode_uint(p: &[u8]) -> Option<u64> {
    Some(match p.len() {
        1 => p[0] as u64,
        2 => u16::from_ne_bytes(p.try_into().ok()?) as u64,
        4 => u32::from_ne_bytes(p.try_into().ok()?) as u64,
        8 => u64::from_ne_bytes(p.try_into().ok()?),
        _ => return None,
    })
}

pub fn decode_string(p: &[u8]) -> String {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

/// Parse a run of attributes with neli (padding the end to 4 bytes, which
/// neli expects after the last attribute).
pub fn parse_attrs(bytes: &[u8]) -> Result<AttrList, String> {
    let mut v = bytes.to_vec();
    v.resize(bytes.len().div_ceil(4) * 4, 0);
    let len = v.len();
    GenlBuffer::<u16, Buffer>::from_bytes_with_input(&mut Cursor::new(v), len)
        .map_err(|e| format!("malformed attributes: {e}"))
}

/// Builder of request attributes.
#[derive(Default)]
pub struct AttrBuf(Vec<Nlattr<u16, Buffer>>);

fn attr<P: Size + ToBytes>(t: u16, p: P) -> Nlattr<u16, Buffer> {
    NlattrBuilder::default()
        .nla_type(
            AttrTypeBuilder::default()
                .nla_type(t)
                .build()
                .expect("attribute type"),
        )
        .nla_payload(p)
        .build()
        .expect("attribute")
}

impl AttrBuf {
    pub fn new() -> Self {
        AttrBuf(Vec::new())
    }

    pub fn u8(&mut self, t: u16, v: u8) -> &mut Self {
        self.0.push(attr(t, v));
        self
    }

    pub fn u32(&mut self, t: u16, v: u32) -> &mut Self {
        self.0.push(attr(t, v));
        self
    }

    pub fn u64(&mut self, t: u16, v: u64) -> &mut Self {
        self.0.push(attr(t, v));
        self
    }

    /// A flag (an attribute with no payload).
    pub fn flag(&mut self, t: u16) -> &mut Self {
        self.0.push(attr(t, Vec::<u8>::new()));
        self
    }

    /// A NUL-terminated string.
    pub fn string(&mut self, t: u16, v: &str) -> &mut Self {
        self.0.push(attr(t, v));
        self
    }

    /// A nest (with `NLA_F_NESTED`) of the attributes of `inner`.
    pub fn nest(&mut self, t: u16, inner: AttrBuf) -> &mut Self {
        let mut n = NlattrBuilder::default()
            .nla_type(
                AttrTypeBuilder::default()
                    .nla_type(t)
                    .nla_nested(true)
                    .build()
                    .expect("attribute type"),
            )
            .nla_payload(Buffer::new())
            .build()
            .expect("attribute");
        for a in &inner.0 {
            n = n.nest(a).expect("nested attribute");
        }
        self.0.push(n);
        self
    }

    /// The device attributes (`name` = 1 or `dev` = 2 in every set).
    pub fn device(&mut self, name_attr: u16, dev_attr: u16, dev: &DevSpec) -> &mut Self {
        match dev {
            DevSpec::Name(n) => self.string(name_attr, n),
            DevSpec::Num(d) => self.u32(dev_attr, d.encode()),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Bytes the attributes take in a message.
    #[cfg(test)]
    pub fn wire_size(&self) -> usize {
        self.0.iter().map(|a| a.padded_size()).sum()
    }

    fn into_list(self) -> AttrList {
        self.0.into_iter().collect()
    }
}

// ---------------------------------------------------------------------------
// Messages

/// One generic netlink message of the family.
#[derive(Debug)]
pub struct Reply {
    pub cmd: u8,
    pub attrs: AttrList,
}

impl Reply {
    pub fn attrs(&self) -> Attrs<'_> {
        Attrs::new(&self.attrs)
    }
}

/// An error or status from the kernel, decoded from `NLMSG_ERROR`/`NLMSG_DONE`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExtAck {
    pub errno: i32,
    pub msg: Option<String>,
    /// Offset of the offending attribute in the request.
    pub offset: Option<u32>,
    /// Type of a missing attribute.
    pub miss_type: Option<u32>,
}

/// A netlink message of a received datagram.
#[derive(Debug)]
pub enum Packet {
    /// A message of a generic netlink family (`nlmsg_type` = family id);
    /// `intr`: `NLM_F_DUMP_INTR`, the dump saw the kernel's state change.
    Genl {
        ty: u16,
        seq: u32,
        intr: bool,
        reply: Reply,
    },
    /// `NLMSG_ERROR` with error 0.
    Ack { seq: u32 },
    /// `NLMSG_ERROR` with an error.
    Error { seq: u32, ack: ExtAck },
    /// `NLMSG_DONE`; `ack.errno` is 0 when the dump succeeded.
    Done { seq: u32, intr: bool, ack: ExtAck },
    /// Anything else (`NLMSG_NOOP`, `NLMSG_OVERRUN`, ...).
    Other,
}

fn parse_ext_ack(errno: i32, tlvs: &[u8]) -> ExtAck {
    let mut ack = ExtAck {
        errno,
        ..Default::default()
    };
    if tlvs.is_empty() {
        return ack;
    }
    let mut v = tlvs.to_vec();
    v.resize(tlvs.len().div_ceil(4) * 4, 0);
    let len = v.len();
    // A malformed TLV area loses the message, not the error.
    let Ok(list) =
        GenlBuffer::<NlmsgerrAttr, Buffer>::from_bytes_with_input(&mut Cursor::new(v), len)
    else {
        return ack;
    };
    for a in list.iter() {
        let p = a.payload().as_ref();
        match *a.nla_type().nla_type() {
            NlmsgerrAttr::Msg => {
                let m = decode_string(p);
                let m = m.trim();
                if !m.is_empty() {
                    ack.msg = Some(m.to_string());
                }
            }
            NlmsgerrAttr::Offset => ack.offset = decode_uint(p).map(|v| v as u32),
            NlmsgerrAttr::UnrecognizedConst(NLMSGERR_ATTR_MISS_TYPE) => {
                ack.miss_type = decode_uint(p).map(|v| v as u32)
            }
            NlmsgerrAttr::UnrecognizedConst(NLMSGERR_ATTR_MISS_NEST) => {}
            _ => {}
        }
    }
    ack
}

/// Split a datagram into its messages and decode them.
pub fn parse_datagram(buf: &[u8]) -> Result<Vec<Packet>, String> {
    let mut out = Vec::new();
    let mut off = 0usize;
    while off + NLMSG_HDRLEN <= buf.len() {
        let hdr = NlmsghdrAck::<u16>::from_bytes(&mut Cursor::new(&buf[off..off + NLMSG_HDRLEN]))
            .map_err(|e| format!("bad netlink header: {e}"))?;
        let len = *hdr.nl_len() as usize;
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return Err(format!(
                "bad netlink message length {len} at offset {off} of {}",
                buf.len()
            ));
        }
        let ty = *hdr.nl_type();
        let flags = *hdr.nl_flags();
        let seq = *hdr.nl_seq();
        let payload = &buf[off + NLMSG_HDRLEN..off + len];
        let errno_of = |p: &[u8]| -> Result<i32, String> {
            p.get(..4)
                .map(|b| -i32::from_ne_bytes(b.try_into().unwrap()))
                .ok_or_else(|| "short error message".to_string())
        };
        let packet = if ty == u16::from(Nlmsg::Error) {
            let errno = errno_of(payload)?;
            if errno == 0 {
                Packet::Ack { seq }
            } else {
                // The echoed request: its header, and unless capped its
                // payload too.
                let echo = payload.get(4..).unwrap_or(&[]);
                let mut skip = NLMSG_HDRLEN.min(echo.len());
                if !flags.contains(NlmF::CAPPED) && echo.len() >= NLMSG_HDRLEN {
                    let elen = u32::from_ne_bytes(echo[..4].try_into().unwrap()) as usize;
                    skip = elen.div_ceil(4) * 4;
                }
                let tlvs = if flags.contains(NlmF::ACK_TLVS) {
                    echo.get(skip..).unwrap_or(&[])
                } else {
                    &[]
                };
                Packet::Error {
                    seq,
                    ack: parse_ext_ack(errno, tlvs),
                }
            }
        } else if ty == u16::from(Nlmsg::Done) {
            let errno = if payload.len() >= 4 {
                errno_of(payload)?
            } else {
                0
            };
            let tlvs = if flags.contains(NlmF::ACK_TLVS) {
                payload.get(4..).unwrap_or(&[])
            } else {
                &[]
            };
            Packet::Done {
                seq,
                intr: flags.contains(NlmF::DUMP_INTR),
                ack: parse_ext_ack(errno, tlvs),
            }
        } else if ty < libc::NLMSG_MIN_TYPE as u16 {
            Packet::Other
        } else {
            let mut v = payload.to_vec();
            v.resize(payload.len().div_ceil(4) * 4, 0);
            if v.len() < GENL_HDRLEN {
                return Err("short generic netlink message".into());
            }
            let vlen = v.len();
            let g = Genlmsghdr::<u8, u16>::from_bytes_with_input(&mut Cursor::new(v), vlen)
                .map_err(|e| format!("malformed generic netlink message: {e}"))?;
            Packet::Genl {
                ty,
                seq,
                intr: flags.contains(NlmF::DUMP_INTR),
                reply: Reply {
                    cmd: *g.cmd(),
                    attrs: g.attrs().iter().cloned().collect(),
                },
            }
        };
        out.push(packet);
        off += len.div_ceil(4) * 4;
    }
    Ok(out)
}

/// Serialize a request of the family.
pub fn build_request(family: u16, flags: NlmF, seq: u32, cmd: u8, attrs: AttrBuf) -> Vec<u8> {
    let genl = GenlmsghdrBuilder::<u8, u16>::default()
        .cmd(cmd)
        .version(uapi::FAMILY_VERSION)
        .attrs(attrs.into_list())
        .build()
        .expect("generic netlink header");
    let msg = NlmsghdrBuilder::default()
        .nl_type(family)
        .nl_flags(flags | NlmF::REQUEST)
        .nl_seq(seq)
        .nl_pid(0)
        .nl_payload(NlPayload::Payload(genl))
        .build()
        .expect("netlink header");
    let mut c = Cursor::new(Vec::with_capacity(msg.padded_size()));
    msg.to_bytes(&mut c).expect("serialize a request");
    c.into_inner()
}

/// The device a request names, if `offset` points at its top-level `name`
/// (type 1) or `dev` (type 2) attribute, as the user would write it:
/// `"vm1"` or `253:3`.
pub fn device_at(request: &[u8], offset: u32) -> Option<String> {
    let offset = offset as usize;
    let mut pos = NLMSG_HDRLEN + GENL_HDRLEN;
    while pos + 4 <= request.len() {
        let len = u16::from_ne_bytes(request[pos..pos + 2].try_into().ok()?) as usize;
        let ty = u16::from_ne_bytes(request[pos + 2..pos + 4].try_into().ok()?) & 0x3fff;
        if len < 4 || pos + len > request.len() {
            return None;
        }
        if offset == pos {
            let p = &request[pos + 4..pos + len];
            return match ty {
                1 => Some(format!("\"{}\"", decode_string(p))),
                2 => decode_uint(p).map(|v| crate::dev::DevNum::decode(v as u32).to_string()),
                _ => None,
            };
        }
        pos += len.div_ceil(4) * 4;
    }
    None
}

/// A name for the attribute at `offset` of a request, as far as the
/// request can be walked: `range[3].probability`.
pub fn attr_path(
    request: &[u8],
    offset: u32,
    names: &dyn Fn(&[u16]) -> Option<String>,
) -> Option<String> {
    let base = NLMSG_HDRLEN + GENL_HDRLEN;
    let offset = offset as usize;
    if offset < base || offset >= request.len() {
        return None;
    }
    // (type, index among attributes of that type, nested)
    let mut path: Vec<(u16, usize, bool)> = Vec::new();
    let (mut start, mut end) = (base, request.len());
    loop {
        let mut pos = start;
        let mut counts: std::collections::HashMap<u16, usize> = Default::default();
        let mut found = None;
        while pos + 4 <= end {
            let len = u16::from_ne_bytes(request[pos..pos + 2].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(request[pos + 2..pos + 4].try_into().unwrap()) & 0x3fff;
            if len < 4 || pos + len > end {
                return None;
            }
            let idx = *counts.entry(ty).and_modify(|c| *c += 1).or_insert(0);
            if offset >= pos && offset < pos + len {
                found = Some((ty, idx, pos, len));
                break;
            }
            pos += len.div_ceil(4) * 4;
        }
        let (ty, idx, pos, len) = found?;
        let nested =
            u16::from_ne_bytes(request[pos + 2..pos + 4].try_into().unwrap()) & 0x8000 != 0;
        path.push((ty, idx, nested));
        if offset == pos || !nested {
            break;
        }
        start = pos + 4;
        end = pos + len;
    }
    let types: Vec<u16> = path.iter().map(|p| p.0).collect();
    let mut out = String::new();
    for i in 0..path.len() {
        if i > 0 {
            out.push('.');
        }
        let name = names(&types[..=i]).unwrap_or_else(|| format!("{}", path[i].0));
        out.push_str(&name);
        // Index nests (the multi-attrs of this family).
        if path[i].2 {
            out.push_str(&format!("[{}]", path[i].1));
        }
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// Sockets

fn setsockopt_int(fd: i32, level: i32, opt: i32, v: i32) -> io::Result<()> {
    // SAFETY: a plain setsockopt with an int value.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            &v as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn getsockopt_int(fd: i32, level: i32, opt: i32) -> io::Result<i32> {
    let mut v: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: a plain getsockopt of an int value.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            &mut v as *mut i32 as *mut libc::c_void,
            &mut len,
        )
    };
    if r == 0 {
        Ok(v)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Now on `CLOCK_MONOTONIC`, in nanoseconds: the clock of the kernel's
/// trace records (`ktime_get_ns`), so a listener can tell how late it reads
/// them.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always
    // exists, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Wait until `fd` is readable.  `Ok(false)` on timeout or on a signal.
fn poll_in(fd: i32, timeout: Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one pollfd.
    let r = unsafe { libc::poll(&mut p, 1, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(r > 0)
}

/// Family id and, if asked for, a multicast group id, resolved with neli's
/// router on a short-lived socket of its own.
pub fn resolve(group: Option<&str>) -> Result<(u16, Option<u32>)> {
    let op = "resolve the generic netlink family";
    let (router, _mcast) = NlRouter::connect(NlFamily::Generic, None, Groups::empty())
        .map_err(|e| Error::proto(op, e.to_string()))?;
    let id = match router.resolve_genl_family(uapi::FAMILY_NAME) {
        Ok(id) => id,
        Err(RouterError::Nlmsgerr(e)) if -*e.error() == libc::ENOENT => {
            return Err(Error::NotLoaded)
        }
        Err(RouterError::Msg(_)) => return Err(Error::NotLoaded),
        Err(e) => return Err(Error::proto(op, e.to_string())),
    };
    let gid = match group {
        None => None,
        Some(g) => match router.resolve_nl_mcast_group(uapi::FAMILY_NAME, g) {
            Ok(gid) => Some(gid),
            Err(e) => {
                return Err(Error::proto(
                    format!("resolve multicast group \"{g}\""),
                    e.to_string(),
                ))
            }
        },
    };
    Ok((id, gid))
}

/// A request socket of the family.
pub struct Client {
    sock: NlSocket,
    family: u16,
    seq: u32,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect() -> Result<Self> {
        let (family, _) = resolve(None)?;
        Self::with_family(family)
    }

    pub fn with_family(family: u16) -> Result<Self> {
        let op = "open a generic netlink socket";
        let sock = NlSocket::connect(NlFamily::Generic, None, Groups::empty())
            .map_err(|e| Error::io(op, e))?;
        let fd = sock.as_raw_fd();
        // Extended acks with capped error messages; old kernels without
        // them still work, with bare errnos.
        let _ = sock.enable_ext_ack(true);
        let _ = setsockopt_int(fd, libc::SOL_NETLINK, libc::NETLINK_CAP_ACK, 1);
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, SNDBUF as i32);
        // Large dumps: do not drop our own answers.
        let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 1 << 20);
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Client {
            sock,
            family,
            seq,
            buf: vec![0; RECV_BYTES],
        })
    }

    fn send(
        &mut self,
        op: &'static str,
        flags: NlmF,
        cmd: u8,
        attrs: AttrBuf,
    ) -> Result<(u32, Vec<u8>)> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let req = build_request(self.family, flags, seq, cmd, attrs);
        loop {
            match self.sock.send(&req, Msg::empty()) {
                Ok(_) => return Ok((seq, req)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io(op, e)),
            }
        }
    }

    fn recv(&mut self, op: &'static str) -> Result<Vec<Packet>> {
        let deadline = std::time::Instant::now() + REPLY_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !poll_in(self.sock.as_raw_fd(), left).map_err(|e| Error::io(op, e))? {
                // A signal (go on waiting) or the timeout.
                if std::time::Instant::now() >= deadline {
                    return Err(Error::proto(op, "no answer from the kernel (timed out)"));
                }
                continue;
            }
            match self.sock.recv(&mut self.buf[..], Msg::TRUNC) {
                Ok((n, _)) => {
                    if n > self.buf.len() {
                        return Err(Error::proto(op, format!("message of {n} bytes truncated")));
                    }
                    return parse_datagram(&self.buf[..n]).map_err(|m| Error::proto(op, m));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(Error::io(op, e)),
            }
        }
    }

    fn kernel_error(op: &'static str, cmd: u8, req: &[u8], ack: ExtAck) -> Error {
        let mut msg = ack.msg;
        if let Some(off) = ack.offset {
            let text = msg.take().unwrap_or_else(|| strerror(ack.errno));
            msg = Some(match device_at(req, off) {
                // The device attribute: name the device, as asked for.
                Some(dev) => format!("{dev}: {text}"),
                None => match attr_path(req, off, &|p| attr_name(cmd, p).map(str::to_string)) {
                    Some(path) => format!("{text} (attribute {path})"),
                    None => text,
                },
            });
        }
        if msg.is_none() {
            if let Some(t) = ack.miss_type {
                let name = u16::try_from(t)
                    .ok()
                    .and_then(|t| attr_name(cmd, &[t]))
                    .map(str::to_string)
                    .unwrap_or_else(|| t.to_string());
                msg = Some(format!("missing attribute {name}"));
            }
        }
        Error::Kernel {
            op,
            errno: ack.errno,
            msg,
        }
    }

    /// A `do` request: the replies (zero or more) before its ACK.
    pub fn request(&mut self, op: &'static str, cmd: u8, attrs: AttrBuf) -> Result<Vec<Reply>> {
        let (seq, req) = self.send(op, NlmF::ACK, cmd, attrs)?;
        let mut replies = Vec::new();
        loop {
            for p in self.recv(op)? {
                match p {
                    Packet::Genl {
                        ty, seq: s, reply, ..
                    } if s == seq && ty == self.family => replies.push(reply),
                    Packet::Ack { seq: s } if s == seq => return Ok(replies),
                    Packet::Error { seq: s, ack } if s == seq => {
                        return Err(Self::kernel_error(op, cmd, &req, ack))
                    }
                    Packet::Done { seq: s, ack, .. } if s == seq => {
                        if ack.errno != 0 {
                            return Err(Self::kernel_error(op, cmd, &req, ack));
                        }
                        return Ok(replies);
                    }
                    // Stale answers of earlier requests.
                    _ => {}
                }
            }
        }
    }

    /// A `do` request with exactly one reply.
    pub fn request_one(&mut self, op: &'static str, cmd: u8, attrs: AttrBuf) -> Result<Reply> {
        let mut r = self.request(op, cmd, attrs)?;
        if r.is_empty() {
            return Err(Error::proto(op, "the kernel sent no reply"));
        }
        Ok(r.swap_remove(0))
    }

    /// A dump: `f` gets every message until `NLMSG_DONE`.
    pub fn dump(
        &mut self,
        op: &'static str,
        cmd: u8,
        attrs: AttrBuf,
        mut f: impl FnMut(Reply) -> Result<()>,
    ) -> Result<()> {
        let (seq, req) = self.send(op, NlmF::DUMP, cmd, attrs)?;
        let mut failed: Option<Error> = None;
        let mut interrupted = false;
        loop {
            for p in self.recv(op)? {
                match p {
                    Packet::Genl {
                        ty,
                        seq: s,
                        intr,
                        reply,
                    } if s == seq && ty == self.family => {
                        interrupted |= intr;
                        // After a failure, drain the rest of the dump.
                        failed = failed.or_else(|| f(reply).err());
                    }
                    Packet::Done { seq: s, intr, ack } if s == seq => {
                        if ack.errno != 0 {
                            return Err(Self::kernel_error(op, cmd, &req, ack));
                        }
                        if interrupted || intr {
                            return Err(Error::proto(
                                op,
                                "the dump was interrupted by a change in the kernel \
                                 (NLM_F_DUMP_INTR); its result is unreliable, run it again",
                            ));
                        }
                        return match failed {
                            Some(e) => Err(e),
                            None => Ok(()),
                        };
                    }
                    Packet::Error { seq: s, ack } if s == seq => {
                        return Err(Self::kernel_error(op, cmd, &req, ack))
                    }
                    // An ACK of a dump (NLM_F_ACK is not set, but be lenient).
                    Packet::Ack { seq: s } if s == seq => {
                        return match failed {
                            Some(e) => Err(e),
                            None => Ok(()),
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// What a listener's wait ended with.
pub enum Event {
    /// Notifications of the family.
    Messages(Vec<Reply>),
    /// Nothing within the timeout (or a signal came).
    Timeout,
    /// The socket's receive buffer overflowed (`ENOBUFS`): notifications
    /// were lost.
    Overrun,
}

/// A multicast listener of the family.
pub struct Listener {
    sock: NlSocket,
    family: u16,
    buf: Vec<u8>,
    /// The receive buffer the kernel granted, in bytes.
    pub rcvbuf: usize,
}

impl Listener {
    /// Join the family's multicast group `group`.
    pub fn subscribe(group: &str) -> Result<Self> {
        let (family, gid) = resolve(Some(group))?;
        Self::join(family, gid.expect("group id"))
    }

    /// Join multicast group `gid` and keep the messages of `family`.
    pub fn join(family: u16, gid: u32) -> Result<Self> {
        let op = "join the trace multicast group";
        let sock = NlSocket::connect(NlFamily::Generic, None, Groups::empty())
            .map_err(|e| Error::io(op, e))?;
        let fd = sock.as_raw_fd();
        // SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped by
        // net.core.rmem_max.
        if setsockopt_int(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            LISTEN_RCVBUF as i32,
        )
        .is_err()
        {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, LISTEN_RCVBUF as i32);
        }
        let rcvbuf = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF).unwrap_or(0) as usize;
        sock.add_mcast_membership(Groups::new_groups(&[gid]))
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => Error::Kernel {
                    op: "joining the trace multicast group",
                    errno: libc::EPERM,
                    msg: None,
                },
                _ => Error::io(op, e),
            })?;
        Ok(Listener {
            sock,
            family,
            buf: vec![0; RECV_BYTES],
            rcvbuf,
        })
    }

    pub fn family(&self) -> u16 {
        self.family
    }

    /// Whether more notifications are queued (a listener that finds them
    /// after reading one is behind).
    pub fn pending(&self) -> bool {
        poll_in(self.sock.as_raw_fd(), Duration::ZERO).unwrap_or(false)
    }

    /// Wait up to `timeout` for notifications.
    pub fn wait(&mut self, timeout: Duration) -> Result<Event> {
        let op = "receive trace notifications";
        if !poll_in(self.sock.as_raw_fd(), timeout).map_err(|e| Error::io(op, e))? {
            return Ok(Event::Timeout);
        }
        match self
            .sock
            .recv(&mut self.buf[..], Msg::TRUNC | Msg::DONTWAIT)
        {
            Ok((n, _)) => {
                if n > self.buf.len() {
                    return Err(Error::proto(
                        op,
                        format!("notification of {n} bytes truncated"),
                    ));
                }
                let packets = parse_datagram(&self.buf[..n]).map_err(|m| Error::proto(op, m))?;
                Ok(Event::Messages(
                    packets
                        .into_iter()
                        .filter_map(|p| match p {
                            Packet::Genl { ty, reply, .. } if ty == self.family => Some(reply),
                            _ => None,
                        })
                        .collect(),
                ))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(Event::Overrun),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                Ok(Event::Timeout)
            }
            Err(e) => Err(Error::io(op, e)),
        }
    }
}

/// Spec names of attributes by command and nesting path, for error messages.
pub fn attr_name(cmd: u8, path: &[u16]) -> Option<&'static str> {
    use uapi::*;
    let top: &[&str] = match cmd {
        cmd::DEV_GET => &[
            "name",
            "dev",
            "origin",
            "sectors",
            "origin-sectors",
            "read-bios",
            "read-sectors",
            "write-bios",
            "write-sectors",
            "discard-bios",
            "discard-sectors",
            "flush-bios",
            "errors",
            "epoch",
            "log-state",
            "prev-state",
            "level",
            "adaptive",
            "grain-bytes",
            "dirty-bytes",
            "prev-dirty-bytes",
            "log-memory",
            "coarse-fallbacks",
            "degraded",
            "trace-records",
            "trace-dropped",
            "predict-ranges",
            "cache-capacity",
            "cache-bytes",
            "cache-hits",
            "cache-misses",
            "cache-partial",
            "prefetch-queued",
            "prefetch-inflight",
            "prefetch-errors",
            "prefetch-stale",
            "verify-mismatch",
            "tier",
            "rotate-owner",
            "write-kbps",
            "write-delayed",
            "write-delayed-bytes",
            "write-waiting",
        ],
        cmd::DIRTY_GET | cmd::DIRTY_ROTATE => &[
            "name",
            "dev",
            "epoch",
            "epoch-number",
            "state",
            "extent",
            "expect-epoch",
            "claim",
            "force",
        ],
        cmd::PREDICT => &["name", "dev", "kind", "horizon-ms", "range", "accepted"],
        cmd::POLICY_SET => &[
            "name",
            "dev",
            "level",
            "adaptive",
            "base",
            "w-io",
            "w-dirty",
            "min-level",
            "max-level",
            "hysteresis",
            "predict-ttl",
            "dense-pct",
            "interval-ms",
            "max-memory-kb",
            "trace-rate",
            "cache-mb",
            "critical-ppm",
            "predictive-ppm",
            "min-ppm",
            "prefetch-kbps",
            "prefetch-inflight",
            "load-limit",
            "idle-ms",
            "write-kbps",
        ],
        cmd::TRACE_NTF => &["name", "dev", "records", "dropped"],
        cmd::SHADOW_GET | cmd::SHADOW_HINT => &[
            "name",
            "dev",
            "source",
            "destination",
            "sectors",
            "region-sectors",
            "regions",
            "hydrated",
            "copying",
            "urgent",
            "predicted",
            "ascending",
            "overwritten",
            "marked",
            "reads-dest",
            "reads-source",
            "copied-bytes",
            "rate-kbps",
            "waiting-writes",
            "copy-errors",
            "commit-errors",
            "crc-mismatches",
            "hints",
            "state",
            "range",
            "accepted",
        ],
        cmd::BUDGET_GET | cmd::BUDGET_SET => &[
            "cache-total-mb",
            "cache-charged-mb",
            "devices",
            "bandwidth-total-kbps",
            "bandwidth-charged-kbps",
            "unlimited",
        ],
        _ => return None,
    };
    let pick = |names: &[&'static str], t: u16| -> Option<&'static str> {
        names.get((t as usize).checked_sub(1)?).copied()
    };
    match path {
        [t] => pick(top, *t),
        [p, t]
            if (cmd == cmd::PREDICT && *p == predict_attr::RANGE)
                || (cmd == cmd::SHADOW_HINT && *p == shadow_attr::RANGE) =>
        {
            pick(&["start", "length", "probability"], *t)
        }
        [p, t] if cmd == cmd::DIRTY_GET && *p == dirty_attr::EXTENT => {
            pick(&["start", "length"], *t)
        }
        [p, t] if cmd == cmd::DEV_GET && *p == dev_attr::TIER => {
            pick(&["tier", "issued", "completed", "used", "wasted"], *t)
        }
        _ => None,
    }
}

/// A stand-in for the kernel's trace notifications in tests: as root, a
/// netlink socket may send to a multicast group of NETLINK_GENERIC (the
/// kernel's own generic netlink ignores the copy it gets, which is no
/// request).  The messages carry a made-up family id.
#[cfg(test)]
pub mod fake {
    use super::*;

    pub const FAMILY: u16 = 0x7ff0;

    pub struct Sender {
        sock: NlSocket,
        group: u32,
    }

    impl Sender {
        pub fn send(&self, m: &[u8]) -> io::Result<()> {
            // SAFETY: a zeroed sockaddr_nl is valid.
            let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            addr.nl_family = libc::AF_NETLINK as u16;
            addr.nl_groups = 1 << (self.group - 1);
            // SAFETY: the buffer and the address are valid for the call.
            let r = unsafe {
                libc::sendto(
                    self.sock.as_raw_fd(),
                    m.as_ptr() as *const libc::c_void,
                    m.len(),
                    0,
                    &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                )
            };
            if r < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    }

    /// A trace-ntf notification.
    pub fn trace_ntf(name: &str, dev: u32, records: &[u8], dropped: u64) -> Vec<u8> {
        let mut a = AttrBuf::new();
        a.string(uapi::trace_attr::NAME, name);
        a.u32(uapi::trace_attr::DEV, dev);
        a.0.push(attr(uapi::trace_attr::RECORDS, records));
        a.u64(uapi::trace_attr::DROPPED, dropped);
        let mut msg = build_request(FAMILY, NlmF::empty(), 0, uapi::cmd::TRACE_NTF, a);
        msg[6..8].copy_from_slice(&0u16.to_ne_bytes()); // no flags
        msg
    }

    /// A listener of `group` (1..=32) and a sender to it; `None` (test
    /// skipped) where that is not allowed.
    pub fn setup(group: u32) -> Option<(Listener, Sender)> {
        let l = Listener::join(FAMILY, group).ok()?;
        let tx = Sender {
            sock: NlSocket::connect(NlFamily::Generic, None, Groups::empty()).ok()?,
            group,
        };
        // A probe of another family id, which the listener drops.
        let mut probe = trace_ntf("probe", 0, &[], 0);
        probe[4..6].copy_from_slice(&(FAMILY + 1).to_ne_bytes());
        if let Err(e) = tx.send(&probe) {
            eprintln!("cannot send to a netlink group here ({e}); skipped");
            return None;
        }
        Some((l, tx))
    }
}

/// Netlink messages built by hand for tests, independently of the encoder
/// under test.
#[cfg(test)]
pub mod wire {
    /// An attribute of type `ty`, padded to 4 bytes.
    pub fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::wire::nla;
    use super::*;

    fn nlmsg(ty: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + payload.len();
        let mut v = Vec::new();
        v.extend_from_slice(&(len as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&flags.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&4242u32.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn genl_message_with_nests_and_unknown_attrs() {
        let mut p = vec![uapi::cmd::DIRTY_GET, 1, 0, 0];
        p.extend(nla(uapi::dirty_attr::NAME, b"vm1\0"));
        p.extend(nla(uapi::dirty_attr::EPOCH_NUMBER, &7u64.to_ne_bytes()));
        p.extend(nla(uapi::dirty_attr::STATE, &1u32.to_ne_bytes()));
        p.extend(nla(99, b"whatever"));
        for (s, l) in [(0u64, 8u64), (64, 16)] {
            let mut inner = nla(uapi::extent_attr::START, &s.to_ne_bytes());
            inner.extend(nla(uapi::extent_attr::LENGTH, &l.to_ne_bytes()));
            p.extend(nla(uapi::dirty_attr::EXTENT | 0x8000, &inner));
        }
        p.extend(nla(0, &[0; 4])); // a pad attribute
        let mut buf = nlmsg(0x20, libc::NLM_F_MULTI as u16, 5, &p);
        buf.extend(nlmsg(
            libc::NLMSG_DONE as u16,
            libc::NLM_F_MULTI as u16,
            5,
            &0i32.to_ne_bytes(),
        ));
        let pk = parse_datagram(&buf).unwrap();
        assert_eq!(pk.len(), 2);
        let Packet::Genl { ty, seq, reply, .. } = &pk[0] else {
            panic!()
        };
        assert_eq!((*ty, *seq, reply.cmd), (0x20, 5, uapi::cmd::DIRTY_GET));
        let a = reply.attrs();
        assert_eq!(a.string(uapi::dirty_attr::NAME).as_deref(), Some("vm1"));
        assert_eq!(a.u64(uapi::dirty_attr::EPOCH_NUMBER).unwrap(), Some(7));
        assert_eq!(a.u32(uapi::dirty_attr::STATE).unwrap(), Some(1));
        let ext: Vec<(u64, u64)> = a
            .all(uapi::dirty_attr::EXTENT)
            .map(|p| {
                let l = Attrs::parse_nested(p).unwrap();
                let n = Attrs::new(&l);
                (
                    n.u64(uapi::extent_attr::START).unwrap().unwrap(),
                    n.u64(uapi::extent_attr::LENGTH).unwrap().unwrap(),
                )
            })
            .collect();
        assert_eq!(ext, vec![(0, 8), (64, 16)]);
        let Packet::Done { seq: 5, ack, .. } = &pk[1] else {
            panic!()
        };
        assert_eq!(ack.errno, 0);
    }

    #[test]
    fn u8_attribute_last_and_short_payload() {
        let mut p = vec![uapi::cmd::DEV_GET, 1, 0, 0];
        p.extend(nla(uapi::dev_attr::DEV, &0xfd03u32.to_ne_bytes()));
        p.extend(nla(uapi::dev_attr::DEGRADED, &[1]));
        // The message length leaves out the last attribute's padding.
        let mut buf = nlmsg(0x20, 0, 1, &p);
        let unpadded = (NLMSG_HDRLEN + p.len() - 3) as u32;
        buf[..4].copy_from_slice(&unpadded.to_ne_bytes());
        let pk = parse_datagram(&buf).unwrap();
        let Packet::Genl { reply, .. } = &pk[0] else {
            panic!()
        };
        assert_eq!(reply.attrs().u8(uapi::dev_attr::DEGRADED).unwrap(), Some(1));
        assert_eq!(
            reply.attrs().u32(uapi::dev_attr::DEV).unwrap(),
            Some(0xfd03)
        );
        assert_eq!(reply.attrs().u64(uapi::dev_attr::SECTORS).unwrap(), None);
        // A u64 of 4 bytes is widened; of 3 bytes, rejected.
        let l = parse_attrs(&nla(4, &[1, 2, 3])).unwrap();
        assert!(Attrs::new(&l).u64(4).is_err());
    }

    #[test]
    fn capped_error_with_extack() {
        let req_hdr = nlmsg(0x20, 5, 9, &[0; 40]);
        let mut p = (-libc::ENODEV).to_ne_bytes().to_vec();
        p.extend_from_slice(&req_hdr[..16]); // capped: the header only
        p.extend(nla(1, b"no foresight device named \"x\"\0"));
        p.extend(nla(2, &24u32.to_ne_bytes()));
        let flags = (libc::NLM_F_CAPPED | libc::NLM_F_ACK_TLVS) as u16;
        let buf = nlmsg(libc::NLMSG_ERROR as u16, flags, 9, &p);
        let pk = parse_datagram(&buf).unwrap();
        let Packet::Error { seq: 9, ack } = &pk[0] else {
            panic!("{pk:?}")
        };
        assert_eq!(ack.errno, libc::ENODEV);
        assert_eq!(ack.msg.as_deref(), Some("no foresight device named \"x\""));
        assert_eq!(ack.offset, Some(24));
    }

    #[test]
    fn uncapped_error_with_extack_and_plain_errors() {
        let req = nlmsg(0x20, 5, 9, &[7; 40]);
        let mut p = (-libc::EINVAL).to_ne_bytes().to_vec();
        p.extend_from_slice(&req);
        p.extend(nla(1, b"bad\0"));
        let buf = nlmsg(libc::NLMSG_ERROR as u16, libc::NLM_F_ACK_TLVS as u16, 9, &p);
        let Packet::Error { ack, .. } = &parse_datagram(&buf).unwrap()[0] else {
            panic!()
        };
        assert_eq!((ack.errno, ack.msg.as_deref()), (libc::EINVAL, Some("bad")));

        // No TLVs.
        let mut p = (-libc::EPERM).to_ne_bytes().to_vec();
        p.extend_from_slice(&req[..16]);
        let buf = nlmsg(libc::NLMSG_ERROR as u16, libc::NLM_F_CAPPED as u16, 3, &p);
        let Packet::Error { ack, .. } = &parse_datagram(&buf).unwrap()[0] else {
            panic!()
        };
        assert_eq!(
            *ack,
            ExtAck {
                errno: libc::EPERM,
                ..Default::default()
            }
        );

        // An ACK.
        let mut p = 0i32.to_ne_bytes().to_vec();
        p.extend_from_slice(&req[..16]);
        let buf = nlmsg(libc::NLMSG_ERROR as u16, libc::NLM_F_CAPPED as u16, 3, &p);
        assert!(matches!(
            parse_datagram(&buf).unwrap()[0],
            Packet::Ack { seq: 3 }
        ));
    }

    #[test]
    fn done_with_error_and_message() {
        let mut p = (-libc::ESTALE).to_ne_bytes().to_vec();
        p.extend(nla(1, b"epoch rotated during the dump\0"));
        let flags = (libc::NLM_F_MULTI | libc::NLM_F_ACK_TLVS) as u16;
        let buf = nlmsg(libc::NLMSG_DONE as u16, flags, 4, &p);
        let Packet::Done { seq: 4, ack, .. } = &parse_datagram(&buf).unwrap()[0] else {
            panic!()
        };
        assert_eq!(ack.errno, libc::ESTALE);
        assert_eq!(ack.msg.as_deref(), Some("epoch rotated during the dump"));
    }

    #[test]
    fn missing_attribute_tlv() {
        let mut p = (-libc::EINVAL).to_ne_bytes().to_vec();
        p.extend_from_slice(&nlmsg(0x20, 5, 9, &[])[..16]);
        p.extend(nla(NLMSGERR_ATTR_MISS_TYPE, &3u32.to_ne_bytes()));
        let flags = (libc::NLM_F_CAPPED | libc::NLM_F_ACK_TLVS) as u16;
        let buf = nlmsg(libc::NLMSG_ERROR as u16, flags, 9, &p);
        let Packet::Error { ack, .. } = &parse_datagram(&buf).unwrap()[0] else {
            panic!()
        };
        assert_eq!(ack.miss_type, Some(3));
        let e = Client::kernel_error(
            "predict",
            uapi::cmd::PREDICT,
            &[],
            ExtAck {
                errno: libc::EINVAL,
                miss_type: Some(3),
                ..Default::default()
            },
        );
        assert_eq!(e.to_string(), "predict: missing attribute kind (EINVAL)");
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut buf = nlmsg(0x20, 0, 1, &[1, 1, 0, 0]);
        buf[0] = 200;
        assert!(parse_datagram(&buf).is_err());
        buf[0] = 3;
        assert!(parse_datagram(&buf).is_err());
    }

    #[test]
    fn request_encoding() {
        let mut a = AttrBuf::new();
        a.string(uapi::predict_attr::NAME, "vm1");
        a.u32(uapi::predict_attr::KIND, uapi::predict_kind::WRITE);
        let mut r = AttrBuf::new();
        r.u64(uapi::range_attr::START, 1 << 40)
            .u64(uapi::range_attr::LENGTH, 8)
            .u32(uapi::range_attr::PROBABILITY, 500_000);
        a.nest(uapi::predict_attr::RANGE, r);
        a.u8(uapi::policy_attr::ADAPTIVE, 1);
        let req = build_request(0x1234, NlmF::ACK, 77, uapi::cmd::PREDICT, a);
        assert_eq!(
            u32::from_ne_bytes(req[0..4].try_into().unwrap()) as usize,
            req.len()
        );
        assert_eq!(u16::from_ne_bytes(req[4..6].try_into().unwrap()), 0x1234);
        let flags = u16::from_ne_bytes(req[6..8].try_into().unwrap());
        assert_eq!(flags, (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16);
        assert_eq!(u32::from_ne_bytes(req[8..12].try_into().unwrap()), 77);
        assert_eq!(
            &req[16..20],
            &[uapi::cmd::PREDICT, uapi::FAMILY_VERSION, 0, 0]
        );
        let body = &req[20..];
        // name: len 8 ("vm1\0"), type 1
        assert_eq!(&body[..8], &[8, 0, 1, 0, b'v', b'm', b'1', 0]);
        // kind
        assert_eq!(&body[8..16], &[8, 0, 3, 0, 1, 0, 0, 0]);
        // range nest: 4 + 12 + 12 + 8 = 36, type 5 | NLA_F_NESTED
        assert_eq!(u16::from_ne_bytes(body[16..18].try_into().unwrap()), 36);
        assert_eq!(
            u16::from_ne_bytes(body[18..20].try_into().unwrap()),
            5 | 0x8000
        );
        assert_eq!(&body[20..24], &[12, 0, 1, 0]);
        assert_eq!(
            u64::from_ne_bytes(body[24..32].try_into().unwrap()),
            1 << 40
        );
        assert_eq!(&body[32..36], &[12, 0, 2, 0]);
        assert_eq!(&body[44..48], &[8, 0, 3, 0]);
        assert_eq!(
            u32::from_ne_bytes(body[48..52].try_into().unwrap()),
            500_000
        );
        // u8: nla_len 5, padded to 8
        assert_eq!(&body[52..60], &[5, 0, 4, 0, 1, 0, 0, 0]);
        assert_eq!(body.len(), 60);

        // The error offset of the probability maps to its name.
        let off = (20 + 44) as u32;
        let name = |p: &[u16]| attr_name(uapi::cmd::PREDICT, p).map(str::to_string);
        assert_eq!(
            attr_path(&req, off, &name).as_deref(),
            Some("range[0].probability")
        );
        assert_eq!(attr_path(&req, 28, &name).as_deref(), Some("kind"));
        assert_eq!(attr_path(&req, 36, &name).as_deref(), Some("range[0]"));
        assert_eq!(attr_path(&req, 4, &name), None);
    }

    /// The name tables cover every attribute of the uAPI, and no more.
    #[test]
    fn attr_names_cover_the_sets() {
        use uapi::*;
        for (c, max) in [
            (cmd::DEV_GET, dev_attr::MAX),
            (cmd::DIRTY_GET, dirty_attr::MAX),
            (cmd::PREDICT, predict_attr::MAX),
            (cmd::POLICY_SET, policy_attr::MAX),
            (cmd::TRACE_NTF, trace_attr::MAX),
            (cmd::SHADOW_GET, shadow_attr::MAX),
            (cmd::BUDGET_GET, budget_attr::MAX),
        ] {
            assert!(attr_name(c, &[max]).is_some(), "cmd {c} attr {max}");
            assert_eq!(attr_name(c, &[max + 1]), None, "cmd {c}");
        }
        assert_eq!(attr_name(cmd::DEV_GET, &[dev_attr::TIER]), Some("tier"));
        assert_eq!(
            attr_name(cmd::DEV_GET, &[dev_attr::CACHE_CAPACITY]),
            Some("cache-capacity")
        );
        assert_eq!(
            attr_name(cmd::DEV_GET, &[dev_attr::TIER, tier_stats_attr::WASTED]),
            Some("wasted")
        );
        assert_eq!(
            attr_name(cmd::DEV_GET, &[dev_attr::TIER, tier_stats_attr::MAX + 1]),
            None
        );
        assert_eq!(
            attr_name(cmd::POLICY_SET, &[policy_attr::CACHE_MB]),
            Some("cache-mb")
        );
        assert_eq!(
            attr_name(cmd::POLICY_SET, &[policy_attr::IDLE_MS]),
            Some("idle-ms")
        );
    }

    /// The request/response loop against the kernel's own generic netlink
    /// controller (family "nlctrl", id 0x10), which every kernel has.
    #[test]
    fn real_kernel_nlctrl() {
        let Ok(mut c) = Client::with_family(libc::GENL_ID_CTRL as u16) else {
            eprintln!("no generic netlink here; skipped");
            return;
        };
        const GETFAMILY: u8 = libc::CTRL_CMD_GETFAMILY as u8;
        const FAMILY_ID: u16 = libc::CTRL_ATTR_FAMILY_ID as u16;
        const FAMILY_NAME: u16 = libc::CTRL_ATTR_FAMILY_NAME as u16;
        // do
        let mut a = AttrBuf::new();
        a.string(FAMILY_NAME, "nlctrl");
        let r = c.request_one("getfamily", GETFAMILY, a).unwrap();
        assert_eq!(r.attrs().u32(FAMILY_ID).unwrap(), Some(0x10));
        assert_eq!(r.attrs().string(FAMILY_NAME).as_deref(), Some("nlctrl"));
        // dump, several messages
        let mut names = Vec::new();
        c.dump("getfamily", GETFAMILY, AttrBuf::new(), |r| {
            names.push(r.attrs().string(FAMILY_NAME).unwrap_or_default());
            Ok(())
        })
        .unwrap();
        assert!(names.iter().any(|n| n == "nlctrl"), "{names:?}");
        // an error, with the capped error message parsed
        let mut a = AttrBuf::new();
        a.string(FAMILY_NAME, "nosuchfamily");
        let e = c.request("getfamily", GETFAMILY, a).unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
        // A name longer than the controller's policy allows: EINVAL with an
        // extended ack message and the offset of the attribute.
        let mut a = AttrBuf::new();
        a.string(FAMILY_NAME, "a-name-longer-than-genl-namsiz");
        match c.request("getfamily", GETFAMILY, a).unwrap_err() {
            Error::Kernel { errno, msg, .. } => {
                assert_eq!(errno, libc::EINVAL);
                let msg = msg.expect("an extack message");
                assert!(msg.contains("(attribute "), "{msg}");
            }
            e => panic!("{e}"),
        }
        // A listener joins nlctrl's "notify" group and times out quietly.
        let (router, _) = NlRouter::connect(NlFamily::Generic, None, Groups::empty()).unwrap();
        let gid = router.resolve_nl_mcast_group("nlctrl", "notify").unwrap();
        let mut l = Listener::join(libc::GENL_ID_CTRL as u16, gid).unwrap();
        assert!(l.rcvbuf > 0);
        assert!(matches!(
            l.wait(Duration::from_millis(20)).unwrap(),
            Event::Timeout
        ));
        // and the family resolution through neli's router
        assert!(matches!(resolve(None), Err(Error::NotLoaded) | Ok(_)));
    }

    /// Multicast delivery and overruns through the real kernel (see
    /// [`fake`]).  Skipped when not allowed.
    #[test]
    fn real_kernel_multicast_and_overrun() {
        const GROUP: u32 = 31;
        let Some((mut l, tx)) = fake::setup(GROUP) else {
            return;
        };
        let mut rec = Vec::new();
        rec.extend_from_slice(&77u64.to_ne_bytes());
        rec.extend_from_slice(&4096u64.to_ne_bytes());
        rec.extend_from_slice(&8u32.to_ne_bytes());
        rec.extend_from_slice(&[uapi::op::WRITE, 0, 0, 0]);
        let msg = fake::trace_ntf("vm1", 0xfd03, &rec, 5);
        tx.send(&msg).unwrap();
        let got = loop {
            match l.wait(Duration::from_secs(2)).unwrap() {
                Event::Messages(m) if !m.is_empty() => break m,
                Event::Messages(_) => continue,
                Event::Timeout => panic!("no notification"),
                Event::Overrun => panic!("overrun"),
            }
        };
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].cmd, uapi::cmd::TRACE_NTF);
        let t = crate::commands::trace::TraceMsg::from_reply(&got[0])
            .unwrap()
            .unwrap();
        assert_eq!(t.name.as_deref(), Some("vm1"));
        assert_eq!((t.dev, t.dropped), (Some(0xfd03), Some(5)));
        assert_eq!(t.records.len(), 1);
        assert_eq!((t.records[0].ts_ns, t.records[0].sector), (77, 4096));

        // Overrun: a small receive buffer, many notifications unread.
        setsockopt_int(l.sock.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4096).unwrap();
        for _ in 0..200 {
            tx.send(&msg).unwrap();
        }
        let (mut overruns, mut received) = (0, 0);
        loop {
            match l.wait(Duration::from_millis(200)).unwrap() {
                Event::Overrun => overruns += 1,
                Event::Messages(m) => received += m.len(),
                Event::Timeout => break,
            }
        }
        assert!(overruns >= 1, "no overrun, {received} received");
        assert!((1..200).contains(&received), "{received} received");
        // And delivery goes on after it.
        tx.send(&msg).unwrap();
        assert!(
            matches!(l.wait(Duration::from_secs(2)).unwrap(), Event::Messages(m) if m.len() == 1)
        );
    }

    #[test]
    fn device_errors_name_the_device() {
        let mut a = AttrBuf::new();
        a.string(uapi::dev_attr::NAME, "vm9");
        let req = build_request(0x20, NlmF::ACK, 1, uapi::cmd::DEV_GET, a);
        let ack = ExtAck {
            errno: libc::ENODEV,
            msg: Some("no foresight device of that name".into()),
            offset: Some(20),
            miss_type: None,
        };
        let e = Client::kernel_error("dev-get", uapi::cmd::DEV_GET, &req, ack);
        assert_eq!(
            e.to_string(),
            "dev-get: \"vm9\": no foresight device of that name (ENODEV)"
        );
        let mut a = AttrBuf::new();
        a.u32(uapi::dirty_attr::DEV, 0xfd03);
        a.u32(uapi::dirty_attr::EPOCH, 7);
        let req = build_request(0x20, NlmF::DUMP, 1, uapi::cmd::DIRTY_GET, a);
        let ack = ExtAck {
            errno: libc::ENODEV,
            msg: None,
            offset: Some(20),
            miss_type: None,
        };
        let e = Client::kernel_error("dirty-get", uapi::cmd::DIRTY_GET, &req, ack);
        assert_eq!(e.to_string(), "dirty-get: 253:3: No such device (ENODEV)");
        let ack = ExtAck {
            errno: libc::ERANGE,
            msg: Some("integer out of range".into()),
            offset: Some(28),
            miss_type: None,
        };
        let e = Client::kernel_error("dirty-get", uapi::cmd::DIRTY_GET, &req, ack);
        assert_eq!(
            e.to_string(),
            "dirty-get: integer out of range (attribute epoch) (ERANGE)"
        );
    }

    #[test]
    fn error_texts() {
        let e = Error::Kernel {
            op: "dev-get",
            errno: libc::ENODEV,
            msg: Some("no foresight device named \"x\"".into()),
        };
        assert_eq!(
            e.to_string(),
            "dev-get: no foresight device named \"x\" (ENODEV)"
        );
        let e = Error::Kernel {
            op: "predict",
            errno: libc::EPERM,
            msg: None,
        };
        assert_eq!(
            e.to_string(),
            "permission denied: predict needs CAP_SYS_ADMIN in the host's initial user namespace, \
             as device-mapper does (run as root on the host, not in a container)"
        );
        let e = Error::Kernel {
            op: "dirty-get",
            errno: libc::ESTALE,
            msg: None,
        };
        assert_eq!(e.to_string(), "dirty-get: Stale file handle (ESTALE)");
        assert_eq!(
            Error::NotLoaded.to_string(),
            "the dm-foresight module is not loaded, or this process is not in the host's initial \
             network namespace, the only one foresight is controlled from (no generic netlink \
             family \"foresight\")"
        );
        assert_eq!(errno_name(12345), "errno 12345");
    }
}
