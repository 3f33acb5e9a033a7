// SPDX-License-Identifier: GPL-2.0
//! `foresight budget`: the host's budgets for the devices' prefetch caches
//! and for the background bandwidth of each origin backend (netlink
//! `budget-get`, `budget-set`).

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
    /// Set the most background bandwidth (prefetch, hydration) one origin
    /// backend gives its tables together, in KiB/s (0: no limit)
    #[arg(long = "bandwidth-kbps", value_name = "N")]
    pub bandwidth_kbps: Option<u32>,
    /// Print a JSON object
    #[arg(long)]
    pub json: bool,
}

/// The budgets and what is charged to them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Budget {
    /// The caches' total in MiB (0: no limit).
    pub cache_total_mb: u32,
    /// What the devices' caches hold together, each device once.
    pub cache_charged_mb: u32,
    /// The devices charged.
    pub devices: u32,
    /// The bandwidth total per origin backend, KiB/s (0: no limit).
    pub bandwidth_total_kbps: u32,
    /// The most charged backend's bandwidth (tables with a limit).
    pub bandwidth_charged_kbps: u32,
    /// Tables with no bandwidth limit.
    pub unlimited: u32,
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
        bandwidth_total_kbps: field(B::BANDWIDTH_TOTAL_KBPS)?,
        bandwidth_charged_kbps: field(B::BANDWIDTH_CHARGED_KBPS)?,
        unlimited: field(B::UNLIMITED)?,
    })
}

/// `budget-set`: the totals given.
pub fn set(
    client: &mut Client,
    cache_total_mb: Option<u32>,
    bandwidth_total_kbps: Option<u32>,
) -> Result<(), Failure> {
    let mut a = AttrBuf::new();
    if let Some(v) = cache_total_mb {
        a.u32(B::CACHE_TOTAL_MB, v);
    }
    if let Some(v) = bandwidth_total_kbps {
        a.u32(B::BANDWIDTH_TOTAL_KBPS, v);
    }
    client.request("budget-set", uapi::cmd::BUDGET_SET, a)?;
    Ok(())
}

fn describe(b: &Budget) -> String {
    let total = |v: u32, unit: &str| match v {
        0 => "no limit".to_string(),
        t => format!("{t} {unit}"),
    };
    format!(
        "prefetch caches: {} MiB held by {} device(s), total {}\n\
         background bandwidth: {} KiB/s from the busiest origin backend, total {} per backend; {} table(s) with no limit",
        b.cache_charged_mb,
        b.devices,
        total(b.cache_total_mb, "MiB"),
        b.bandwidth_charged_kbps,
        total(b.bandwidth_total_kbps, "KiB/s"),
        b.unlimited,
    )
}

pub fn run(o: &Opts) -> CmdResult {
    let mut client = Client::connect()?;
    if o.cache_mb.is_some() || o.bandwidth_kbps.is_some() {
        set(&mut client, o.cache_mb, o.bandwidth_kbps)?;
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
            bandwidth_total_kbps: 8192,
            bandwidth_charged_kbps: 4096,
            unlimited: 0,
        };
        let d = describe(&b);
        assert!(
            d.starts_with("prefetch caches: 96 MiB held by 2 device(s), total no limit\n"),
            "{d}"
        );
        assert!(
            d.contains("4096 KiB/s from the busiest origin backend, total 8192 KiB/s"),
            "{d}"
        );
        let b = Budget {
            cache_total_mb: 128,
            ..b
        };
        assert!(describe(&b).contains("total 128 MiB"));
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            r#"{"cache_total_mb":128,"cache_charged_mb":96,"devices":2,"bandwidth_total_kbps":8192,"bandwidth_charged_kbps":4096,"unlimited":0}"#
        );
    }
}
