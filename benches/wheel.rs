//! Cost of the timing wheel's operations with 1,000,000 entries: arm (fresh), re-arm (move to a
//! new deadline), cancel, and expire (advance until all fire). `cargo bench --bench wheel`.

use holdfast::time::wheel::Wheel;
use std::hint::black_box;
use std::time::Instant;

const N: usize = 1_000_000;

/// Deadlines spread over a minute, as keep-alive and heartbeat timers are.
fn deadline(i: usize, salt: u64) -> u64 {
    (i as u64).wrapping_mul(2_654_435_761).wrapping_add(salt) % 60_000 + 1
}

fn report(name: &str, ops: usize, start: Instant) {
    let ns = start.elapsed().as_nanos() as f64 / ops as f64;
    println!("{name:<8} {ops:>8} ops {ns:>8.1} ns/op");
}

fn main() {
    let mut w = Wheel::with_capacity(0, N);
    let t = Instant::now();
    for i in 0..N {
        w.arm(i, deadline(i, 0));
    }
    report("arm", N, t);

    let t = Instant::now();
    for i in 0..N {
        w.arm(i, deadline(i, 7_919));
    }
    report("re-arm", N, t);

    let t = Instant::now();
    for i in (0..N).step_by(2) {
        w.cancel(i);
    }
    report("cancel", N / 2, t);
    for i in (0..N).step_by(2) {
        w.arm(i, deadline(i, 31));
    }

    let mut fired = Vec::with_capacity(N);
    let t = Instant::now();
    let mut now = 0;
    let mut wakeups = 0;
    while let Some(next) = w.next_deadline() {
        now = next.max(now);
        w.expire(now, &mut fired);
        wakeups += 1;
    }
    report("expire", fired.len(), t);
    println!(
        "expire: {wakeups} wake-ups to fire {} entries over {now} ms",
        fired.len()
    );
    black_box(fired);
}
