//! Sealing throughput: a 256 MiB checkpoint-sized buffer sealed and opened
//! (AES-256-GCM in 256 KiB segments, executor/src/seal.rs) beside a
//! plain copy of the same bytes through the same `Write`/`Read` plumbing,
//! in the same run — median of 5.
//!
//! Run: `cargo bench -p loadshift-executor --bench seal`
//! Size and runs: `LOADSHIFT_BENCH_MIB=256` `LOADSHIFT_BENCH_RUNS=5`.

use std::io::{Read, Write};
use std::time::Instant;

use loadshift_executor::seal::{ImagesKey, Reader, Writer};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seconds to push `data` through a writer made by `make`, 1 MiB at a time
/// (the object store's chunk size), and what came out.
fn write_through<W: Write>(data: &[u8], mut w: W) -> (f64, W) {
    let t = Instant::now();
    for chunk in data.chunks(1 << 20) {
        w.write_all(chunk).unwrap();
    }
    (t.elapsed().as_secs_f64(), w)
}

fn main() {
    let mib = env("LOADSHIFT_BENCH_MIB", 256);
    let runs = env("LOADSHIFT_BENCH_RUNS", 5);
    let data: Vec<u8> = (0..mib << 20).map(|i| (i * 7 % 251) as u8).collect();
    let key = ImagesKey::from_bytes(&[7; 32]);
    let (mut copy, mut seal, mut open, mut plain_read) = (vec![], vec![], vec![], vec![]);
    let mut sealed = Vec::new();
    for _ in 0..runs {
        let (s, out) = write_through(&data, Vec::with_capacity(data.len()));
        copy.push(s);
        let t = Instant::now();
        let mut back = Vec::with_capacity(out.len());
        out.as_slice().read_to_end(&mut back).unwrap();
        plain_read.push(t.elapsed().as_secs_f64());

        let w = Writer::new(
            Vec::with_capacity(data.len() + (data.len() >> 10)),
            Some(&key),
            "m",
        )
        .unwrap();
        let (s, w) = write_through(&data, w);
        let t = Instant::now();
        sealed = w.finish().unwrap();
        seal.push(s + t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut back = Vec::with_capacity(data.len());
        Reader::new(sealed.as_slice(), Some(&key), "m")
            .read_to_end(&mut back)
            .unwrap();
        open.push(t.elapsed().as_secs_f64());
        assert_eq!(back.len(), data.len());
    }
    let rate = |s: f64| mib as f64 / s;
    println!("image {mib} MiB, median of {runs} runs");
    println!("{:<28} {:>9} {:>10}", "", "seconds", "MiB/s");
    for (name, v) in [
        ("plain copy (write)", &copy),
        ("plain copy (read)", &plain_read),
        ("seal (AES-256-GCM)", &seal),
        ("open + authenticate", &open),
    ] {
        let m = median(v.clone());
        println!("{name:<28} {m:>9.3} {:>10.0}", rate(m));
    }
    println!(
        "sealed size: {} bytes (+{} bytes, {:.3} %)",
        sealed.len(),
        sealed.len() - data.len(),
        100.0 * (sealed.len() - data.len()) as f64 / data.len() as f64
    );
}
