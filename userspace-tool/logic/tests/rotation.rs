// SPDX-License-Identifier: GPL-2.0

//! Epoch rotation: ownership and the expected epoch.

use foresight_logic::rotation::{decide, Caller, Refusal, Request};
use proptest::prelude::*;

const A: Caller = Caller::Port(100);
const B: Caller = Caller::Port(200);

fn req(expect: Option<u64>, claim: bool, force: bool) -> Request {
    Request {
        expect,
        claim,
        force,
    }
}

#[test]
fn unowned_rotates_for_anyone() {
    assert_eq!(decide(None, 5, Caller::Message, Request::default()), Ok(None));
    assert_eq!(decide(None, 5, A, Request::default()), Ok(None));
}

#[test]
fn a_claim_keeps_others_out_until_forced() {
    let owner = decide(None, 5, A, req(None, true, false)).unwrap();
    assert_eq!(owner, Some(100));
    assert_eq!(decide(owner, 6, B, Request::default()), Err(Refusal::Owned(100)));
    assert_eq!(decide(owner, 6, Caller::Message, Request::default()), Err(Refusal::Owned(100)));
    assert_eq!(decide(owner, 6, B, req(None, true, false)), Err(Refusal::Owned(100)));
    // The owner goes on rotating, claiming or not.
    assert_eq!(decide(owner, 6, A, Request::default()), Ok(Some(100)));
    assert_eq!(decide(owner, 6, A, req(Some(6), true, false)), Ok(Some(100)));
    // Forced: rotates, ownership stays unless taken over.
    assert_eq!(decide(owner, 6, Caller::Message, req(None, false, true)), Ok(Some(100)));
    assert_eq!(decide(owner, 6, B, req(None, true, true)), Ok(Some(200)));
}

#[test]
fn an_expected_epoch_that_moved_on_is_refused() {
    assert_eq!(decide(None, 7, A, req(Some(6), false, false)), Err(Refusal::Moved(7)));
    assert_eq!(decide(None, 7, A, req(Some(7), false, false)), Ok(None));
    // Refused claims take nothing.
    assert_eq!(decide(None, 7, A, req(Some(6), true, false)), Err(Refusal::Moved(7)));
    // Forcing past an owner does not skip the epoch check.
    assert_eq!(decide(Some(200), 7, A, req(Some(6), false, true)), Err(Refusal::Moved(7)));
}

#[test]
fn a_message_cannot_own() {
    assert_eq!(decide(None, 0, Caller::Message, req(None, true, false)), Err(Refusal::NoSocket));
}

proptest! {
    /// Whatever the requests, a rotate that does not come from the owner
    /// and is not forced never happens, and ownership moves only to a
    /// claiming caller.
    #[test]
    fn ownership_is_never_bypassed(
        steps in prop::collection::vec((0u32..3, any::<bool>(), any::<bool>(), prop::option::of(0u64..4)), 1..40)
    ) {
        let mut owner = None;
        let mut epoch = 0u64;
        for (who, claim, force, expect) in steps {
            let caller = if who == 0 { Caller::Message } else { Caller::Port(who) };
            let r = decide(owner, epoch, caller, Request { expect, claim, force });
            if let Ok(next) = r {
                prop_assert!(owner.is_none() || force || caller == Caller::Port(owner.unwrap()));
                prop_assert!(expect.is_none_or(|e| e == epoch));
                prop_assert!(next == owner || (claim && next == Some(who)));
                owner = next;
                epoch += 1;
            }
        }
    }
}
