// SPDX-License-Identifier: GPL-2.0

//! Who may rotate a device's dirty-log epochs.
//!
//! Only two epochs exist: a rotate drops the previous one.  A copy tool
//! that has not read it yet loses it to anyone else's rotate, so a tool may
//! *own* a device's rotation: other callers are refused (`EBUSY`) unless
//! they force it.  A rotate may also name the epoch it expects to end, and
//! is refused (`ESTALE`) if the log has moved on.

/// Who asks for a rotate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// `dmsetup message`: no socket, so it can never own the rotation.
    Message,
    /// A netlink socket, by port id.
    Port(u32),
}

/// A rotate request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Rotate only if this is the current epoch's number.
    pub expect: Option<u64>,
    /// Make the caller the owner (a netlink socket only).
    pub claim: bool,
    /// Rotate even if someone else owns the rotation (and, with `claim`,
    /// take it over).
    pub force: bool,
}

/// Why a rotate was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Another socket owns the rotation (its port id).
    Owned(u32),
    /// The current epoch is not the one expected (its number).
    Moved(u64),
    /// Only a netlink socket can own the rotation.
    NoSocket,
}

impl Refusal {
    /// The sentence for a caller.
    pub fn message(self) -> &'static core::ffi::CStr {
        match self {
            Self::Owned(_) => {
                c"another copy tool owns this device's epoch rotation; force to rotate anyway"
            }
            Self::Moved(_) => c"the log has moved on: the current epoch is not the one expected",
            Self::NoSocket => c"only a netlink socket can own the rotation",
        }
    }
}

/// Decides a rotate by `caller` when `owner` owns the rotation and
/// `current` is the current epoch's number.  Returns the owner afterwards
/// (the rotate itself happens only on `Ok`).
pub fn decide(
    owner: Option<u32>,
    current: u64,
    caller: Caller,
    req: Request,
) -> Result<Option<u32>, Refusal> {
    let port = match caller {
        Caller::Port(p) => Some(p),
        Caller::Message => None,
    };
    if req.claim && port.is_none() {
        return Err(Refusal::NoSocket);
    }
    if let Some(o) = owner {
        if port != Some(o) && !req.force {
            return Err(Refusal::Owned(o));
        }
    }
    if req.expect.is_some_and(|e| e != current) {
        return Err(Refusal::Moved(current));
    }
    Ok(if req.claim { port } else { owner })
}
