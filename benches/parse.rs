//! Cost of parsing one typical request head (wrk's GET with a Host header), for comparing
//! parser changes with `valgrind --tool=callgrind` (instruction counts are stable on a noisy
//! machine). `cargo bench --bench parse`.

use holdfast::proto::http1::request::{Limits, parse_head};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let req = b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n";
    let limits = Limits {
        max_header_bytes: 16 * 1024,
        max_target_bytes: 8192,
    };
    let n = 200_000;
    let t = Instant::now();
    for _ in 0..n {
        black_box(parse_head(black_box(req), &limits).unwrap());
    }
    println!(
        "parse_head {n} ops {:.1} ns/op",
        t.elapsed().as_nanos() as f64 / n as f64
    );
}
