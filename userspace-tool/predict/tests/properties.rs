//! Properties that hold for arbitrary input.

use foresight_predict::trace::{
    decode_records, encode_record, Trace, TraceHeader, TraceReader, TraceWriter,
};
use foresight_predict::{combine, predictor_by_name, Access, Op, Prediction, PREDICTOR_NAMES};
use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    prop::sample::select(Op::ALL.to_vec())
}

fn access() -> impl Strategy<Value = Access> {
    (any::<u64>(), any::<u64>(), any::<u32>(), op()).prop_map(|(ts_ns, sector, sectors, op)| {
        Access {
            ts_ns,
            sector,
            sectors,
            op,
        }
    })
}

fn header() -> impl Strategy<Value = TraceHeader> {
    (
        "[a-zA-Z0-9_.-]([a-zA-Z0-9_. -]{0,20}[a-zA-Z0-9_.-])?",
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(|(device, major, minor, sectors)| TraceHeader {
            device,
            dev: format!("{major}:{minor}"),
            sectors,
        })
}

/// A trace file's items: records, and now and then a dropped total.
fn items() -> impl Strategy<Value = Vec<(Access, Option<u64>)>> {
    prop::collection::vec((access(), prop::option::weighted(0.2, any::<u64>())), 0..50)
}

proptest! {
    #[test]
    fn trace_files_round_trip(header in header(), items in items()) {
        let mut w = TraceWriter::new(Vec::new(), &header).unwrap();
        let mut dropped = 0;
        for (a, d) in &items {
            w.write(a).unwrap();
            if let Some(d) = d {
                w.note_dropped(*d).unwrap();
                dropped = *d;
            }
        }
        let text = w.finish().unwrap();
        let t = Trace::read(&text[..]).unwrap();
        prop_assert_eq!(&t.header, &header);
        prop_assert_eq!(t.dropped, dropped);
        let accesses: Vec<Access> = items.iter().map(|(a, _)| *a).collect();
        prop_assert_eq!(&t.accesses, &accesses);
        // Written again (with only the last dropped total), it reads the same.
        let again = t.write(Vec::new()).unwrap();
        prop_assert_eq!(Trace::read(&again[..]).unwrap(), t);
    }

    #[test]
    fn corrupting_a_record_line_names_it(
        header in header(),
        accesses in prop::collection::vec(access(), 1..20),
        pick in any::<prop::sample::Index>(),
        junk in "[a-z]{1,5}",
    ) {
        let mut text = String::from_utf8(
            Trace { header, accesses: accesses.clone(), dropped: 0 }.write(Vec::new()).unwrap(),
        )
        .unwrap();
        let victim = pick.index(accesses.len());
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines[2 + victim].push(' ');
        lines[2 + victim].push_str(&junk);
        text = lines.join("\n");
        let mut r = TraceReader::new(text.as_bytes()).unwrap();
        let err = r.find_map(Result::err).unwrap();
        prop_assert_eq!(err.line(), Some(3 + victim));
    }

    #[test]
    fn kernel_records_round_trip(accesses in prop::collection::vec(access(), 0..20), extra in 1..24usize) {
        let mut buf: Vec<u8> = accesses.iter().flat_map(encode_record).collect();
        prop_assert_eq!(decode_records(&buf).unwrap(), accesses);
        buf.extend(std::iter::repeat_n(0, extra));
        prop_assert!(decode_records(&buf).is_err());
    }

    #[test]
    fn combine_keeps_the_highest_probability_of_every_sector(
        sets in prop::collection::vec(
            prop::collection::vec(
                (0..64u64, 0..16u64, 0..=4u8, prop::bool::ANY),
                0..8,
            ),
            0..4,
        ),
        max in 0..40usize,
    ) {
        let sets: Vec<Vec<Prediction>> = sets
            .into_iter()
            .map(|set| {
                set.into_iter()
                    .map(|(start, sectors, p, write)| Prediction {
                        start,
                        sectors,
                        probability: f64::from(p) / 4.0,
                        op: if write { Op::Write } else { Op::Read },
                    })
                    .collect()
            })
            .collect();
        let all = combine(sets.clone(), usize::MAX);
        let out = combine(sets.clone(), max);
        prop_assert_eq!(&out[..], &all[..max.min(all.len())]);
        prop_assert!(all.windows(2).all(|w| w[0].probability >= w[1].probability));
        for op in [Op::Read, Op::Write] {
            for sector in 0..80 {
                let best = sets
                    .iter()
                    .flatten()
                    .filter(|p| p.op == op && p.start <= sector && sector < p.end())
                    .map(|p| p.probability)
                    .fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))));
                let covering: Vec<f64> = all
                    .iter()
                    .filter(|p| p.op == op && p.start <= sector && sector < p.end())
                    .map(|p| p.probability)
                    .collect();
                prop_assert!(covering.len() <= 1, "overlap at {}", sector);
                prop_assert_eq!(covering.first().copied(), best);
            }
        }
    }

    #[test]
    fn predictors_keep_their_promises(
        trace in prop::collection::vec(
            prop_oneof![
                access(),
                (0..4096u64, 1..64u32, op()).prop_map(|(block, sectors, op)| Access {
                    ts_ns: 0,
                    sector: block * 8,
                    sectors,
                    op,
                }),
            ],
            0..200,
        ),
        max in 0..32usize,
    ) {
        for name in PREDICTOR_NAMES {
            let mut p = predictor_by_name(name).unwrap();
            for (i, a) in trace.iter().enumerate() {
                p.observe(a);
                if i % 3 == 0 {
                    let preds = p.predict(max);
                    prop_assert!(preds.len() <= max);
                    prop_assert!(preds.windows(2).all(|w| w[0].probability >= w[1].probability));
                    for pr in &preds {
                        prop_assert!((0.0..=1.0).contains(&pr.probability), "{:?}", pr);
                        prop_assert!(pr.sectors > 0 && pr.start.checked_add(pr.sectors).is_some());
                        prop_assert!(matches!(pr.op, Op::Read | Op::Write));
                    }
                }
                prop_assert!((0.0..=1.0).contains(&p.confidence()));
            }
        }
    }
}
