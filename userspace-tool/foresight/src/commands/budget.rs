// SPDX-License-Identifier: GPL-2.0
//! `foresight budget`: the host's budget for the devices' prefetch caches
//! (netlink `budget-get`, `budget-set`).

use super::{exit, CmdResult, Failure};
use crate::nl::{AttrBuf, Client};
use crate::uapi::{self, budget_attr as B};
use serde::Serialize;

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Set the total of the caches, in MiB (0: no limit); refused below
    /// what the devices' caches hold
    #[arg(long = "cache-mb", value_name = "N")]
    pub cache_mb: Option<u32>,
    /// Print a JSON object
    #[arg(long)]
    pub json: bool,
}

/// The budget and what is charged to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// The total in MiB (0: no limit).
    pub cache_total_mb: u32,
    /// What the devices' caches hold together, each device once.
    pub cache_charged_mb: u32,
    /// The devices charged.
    pub devices: u32,
}

/// `budget-get`.
pub fn get(client: &mut Client) -> Result<Budget, Failure> {
    let op = "budget-get";
    let r = client.request_one(op, uapi::cmd::BUDGET_GET, AttrBuf::new())?;
    let a = r.attrs();
    let field = |t: u16| -> Result<u32, Failure> {
        a.u32(t)?
            .ok_or_else(|| Failure::from(format!("{op}: the reply lacks attribute {t}")))
    };
    Ok(Budget {
        cache_total_mb: field(B::CACHE_TOTAL_MB)?,
        cache_charged_mb: field(B::CACHE_CHARGED_MB)?,
        devices: field(B::DEVICES)?,
    })
}

/// `budget-set`.
pub fn set(client: &mut Client, cache_total_mb: u32) -> Result<(), Failure> {
    let mut a = AttrBuf::new();
    a.u32(B::CACHE_TOTAL_MB, cache_total_mb);
    client.request("budget-set", uapi::cmd::BUDGET_SET, a)?;
    Ok(())
}

fn describe(b: &Budget) -> String {
    let total = match b.cache_total_mb {
        0 => "no limit".to_string(),
        t => format!("{t} MiB"),
    };
    format!(
        "prefetch caches: {} MiB held by {} device(s), total {total}",
        b.cache_charged_mb, b.devices
    )
}

pub fn run(o: &Opts) -> CmdResult {
    let mut client = Client::connect()?;
    if let Some(mb) = o.cache_mb {
        set(&mut client, mb)?;
    }
    let b = get(&mut client)?;
    if o.json {
        println!("{}", serde_json::to_string(&b).map_err(|e| e.to_string())?);
    } else {
        println!("{}", describe(&b));
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_budget() {
        let b = Budget {
            cache_total_mb: 0,
            cache_charged_mb: 96,
            devices: 2,
        };
        assert_eq!(
            describe(&b),
            "prefetch caches: 96 MiB held by 2 device(s), total no limit"
        );
        let b = Budget {
            cache_total_mb: 128,
            ..b
        };
        assert!(describe(&b).ends_with("total 128 MiB"));
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"cache_total_mb":128,"cache_charged_mb":96,"devices":2}"#
        );
    }
}
