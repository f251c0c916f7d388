//! The envelope decoder under seeded hostile input (valid events of every
//! kind, the same mutated, random bytes; see `loadshift_testkit::fuzz`):
//! it never panics, every refusal has a reason, and whatever it accepts can
//! be written back and read again, so no consumer can store a value that
//! later fails to decode. The executor decodes its messages with
//! this same function (`Envelope::from_message`).
//!
//! `LOADSHIFT_FUZZ_CASES=1000000 cargo test --release -p loadshift-events --test fuzz`
//! runs the long version (BENCHMARKS.md).

use std::cell::Cell;

use loadshift_events::{DecodeError, Envelope};
use loadshift_testkit::fuzz::{self, proptest};

#[test]
fn the_decoder_refuses_with_a_reason_or_accepts_what_it_can_write_back() {
    let valid = fuzz::valid_events();
    let (accepted, refused) = (Cell::new(0u64), Cell::new(0u64));
    fuzz::runner()
        .run(&fuzz::input(), |input| {
            match Envelope::from_message(&input.subject, &input.payload) {
                Ok(env) => {
                    accepted.set(accepted.get() + 1);
                    let bytes = env.encode().map_err(|e| {
                        proptest::test_runner::TestCaseError::fail(format!(
                            "accepted but not writable: {e}"
                        ))
                    })?;
                    let back = Envelope::from_message(&input.subject, &bytes).map_err(|e| {
                        proptest::test_runner::TestCaseError::fail(format!(
                            "written back but not readable: {e}"
                        ))
                    })?;
                    // Not bit-for-bit: serde_json (without `float_roundtrip`)
                    // may read `1e-50` as 9.999999999999999e-51. What
                    // matters is that it reads back, as the same event.
                    proptest::prop_assert_eq!(
                        (back.id, back.kind(), &back.node),
                        (env.id, env.kind(), &env.node)
                    );
                    if let Some(i) = input.valid {
                        proptest::prop_assert_eq!(&env, &valid[i].1);
                    }
                }
                Err(e) => {
                    refused.set(refused.get() + 1);
                    proptest::prop_assert!(input.valid.is_none(), "a valid event was refused: {e}");
                    proptest::prop_assert!(DecodeError::REASONS.contains(&e.reason()));
                    proptest::prop_assert!(!e.to_string().is_empty());
                }
            }
            Ok(())
        })
        .unwrap();
    // The generator reaches both sides, and mostly the hostile one.
    assert!(accepted.get() > 0 && refused.get() > accepted.get() / 2);
    eprintln!(
        "fuzz: {} inputs, {} accepted, {} refused",
        fuzz::cases(),
        accepted.get(),
        refused.get()
    );
}
