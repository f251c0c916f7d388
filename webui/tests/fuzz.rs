//! The webui's projection under seeded hostile input
//! (`loadshift_testkit::fuzz`): no panic folding it or rendering any page
//! from what it folded; every message is either folded or counted as
//! refused with its reason (the counters behind
//! `loadshift_webui_events_rejected_total` on /metrics) and shown with it on
//! the Events page; no valid event is skipped.
//!
//! `LOADSHIFT_FUZZ_CASES=1000000 cargo test --release -p loadshift-webui --test fuzz`
//! runs the long version (BENCHMARKS.md).

use std::cell::RefCell;

use askama::Template;
use chrono::Utc;
use loadshift_events::Envelope;
use loadshift_testkit::fuzz::{self, proptest};
use loadshift_webui::pages::cluster::{ClusterPage, ClusterView};
use loadshift_webui::pages::events::{EventsPage, EventsView, Filters as EventFilters};
use loadshift_webui::pages::migrations::{Filters, MigrationsPage, MigrationsView};
use loadshift_webui::pages::model::{ModelPage, ModelView};
use loadshift_webui::pages::node::{NodePage, NodeView};
use loadshift_webui::pages::Chrome;
use loadshift_webui::projection::{kept_text, Incoming, Limits, Projection, StreamKind};
use loadshift_webui::{metrics, AppState, Settings};

const SILENT: std::time::Duration = std::time::Duration::from_secs(30);

/// Renders every page of `p`; a panic fails the test.
fn render_all(p: &Projection) {
    let now = Utc::now();
    let chrome = || Chrome::plain("fuzz", "cluster");
    ClusterPage {
        chrome: chrome(),
        v: ClusterView::build(p, now, SILENT),
    }
    .render()
    .unwrap();
    for name in p.nodes.keys() {
        if let Some(v) = NodeView::build(p, name.as_str(), Some("1h"), now, SILENT) {
            NodePage {
                chrome: chrome(),
                v,
            }
            .render()
            .unwrap();
        }
    }
    MigrationsPage {
        chrome: chrome(),
        v: MigrationsView::build(p, &Filters::default(), now),
    }
    .render()
    .unwrap();
    ModelPage {
        chrome: chrome(),
        v: ModelView::build(p),
    }
    .render()
    .unwrap();
    EventsPage {
        chrome: chrome(),
        v: EventsView::build(p, &EventFilters::default()),
    }
    .render()
    .unwrap();
}

#[test]
fn the_projection_folds_or_refuses_every_input_with_its_reason() {
    let p = RefCell::new(Projection::new(Limits::default()));
    let seqs = RefCell::new([0u64; 2]);
    let (folded, refused) = (RefCell::new(0u64), RefCell::new(0u64));
    fuzz::runner()
        .run(&fuzz::input(), |input| {
            let stream = if input.subject.starts_with("telemetry") {
                StreamKind::Telemetry
            } else {
                StreamKind::Events
            };
            let seq = {
                let mut s = seqs.borrow_mut();
                s[stream.index()] += 1;
                s[stream.index()]
            };
            let mut p = p.borrow_mut();
            p.apply(Incoming {
                stream,
                seq,
                subject: &input.subject,
                payload: &input.payload,
                pending: 0,
            });
            let log = match stream {
                StreamKind::Events => &p.events_log,
                StreamKind::Telemetry => &p.telemetry_log,
            };
            let kept = log.back().expect("every message is shown");
            proptest::prop_assert_eq!(kept.seq, seq);
            match Envelope::from_message(&input.subject, &input.payload) {
                Ok(env) => {
                    *folded.borrow_mut() += 1;
                    proptest::prop_assert_eq!(&kept.kind, env.kind().as_str());
                    proptest::prop_assert!(kept.error.is_none());
                }
                Err(e) => {
                    *refused.borrow_mut() += 1;
                    proptest::prop_assert!(input.valid.is_none(), "a valid event refused: {e}");
                    let reason = kept_text(e.to_string().as_bytes());
                    proptest::prop_assert_eq!(kept.error.as_deref(), Some(&*reason));
                }
            }
            if seq.is_multiple_of(5_000) {
                render_all(&p);
            }
            Ok(())
        })
        .unwrap();
    let p = p.into_inner();
    render_all(&p);
    let refused = refused.into_inner();
    assert_eq!(p.counters.parked.iter().sum::<u64>(), refused);
    assert_eq!(p.counters.rejected.values().sum::<u64>(), refused);
    assert_eq!(
        p.counters.folded.iter().sum::<u64>(),
        refused + folded.into_inner()
    );
    // The same counts on /metrics.
    let state = AppState::new(p, Settings::default(), None);
    let text = metrics::render(&state, &state.read());
    let shown: u64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("loadshift_webui_events_rejected_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(shown, refused);
    assert!(text.contains("loadshift_webui_events_rejected_total{reason=\"out_of_range\"}"));
    eprintln!("fuzz: {} inputs, {refused} refused", fuzz::cases());
}
