//! Encode + decode of one small frame, tether against the seed design.
//!
//! Before criterion measures time, every codec is run `COUNT_FRAMES` times
//! under a counting global allocator and the allocations (alloc + realloc
//! calls) per frame are printed as `allocs <codec>/<frame> <per-frame>`, and
//! written as JSON to `$CODEC_ALLOCS_JSON` when that is set.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{Criterion, Throughput};
use tether_bench_codec::{seed, tether, Sample};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const COUNT_FRAMES: u32 = 10_000;

type Codec = (&'static str, Box<dyn FnMut(Sample, u32) -> u64>);

/// The three codecs, each owning whatever buffers it keeps between frames.
fn codecs() -> Vec<Codec> {
    let mut bufs = tether::Buffers::default();
    let mut out = Vec::with_capacity(4096);
    vec![
        (
            "tether",
            Box::new(move |s, id| tether::roundtrip(&mut bufs, s, id)),
        ),
        ("seed-json", Box::new(seed::roundtrip_naive)),
        (
            "seed-json-reuse",
            Box::new(move |s, id| seed::roundtrip_reuse(&mut out, s, id)),
        ),
    ]
}

fn count_allocations() {
    let mut json = Vec::new();
    for (name, mut f) in codecs() {
        for s in Sample::ALL {
            f(s, 0); // warm: buffers that grow once are not per-frame costs
            let before = ALLOCS.load(Ordering::Relaxed);
            for id in 0..COUNT_FRAMES {
                black_box(f(black_box(s), id));
            }
            let n = ALLOCS.load(Ordering::Relaxed) - before;
            let per = n as f64 / f64::from(COUNT_FRAMES);
            println!("allocs {name}/{} {per}", s.name());
            json.push(format!("\"{name}/{}\": {per}", s.name()));
        }
    }
    if let Some(path) = std::env::var_os("CODEC_ALLOCS_JSON") {
        std::fs::write(path, format!("{{{}}}\n", json.join(", "))).expect("write allocs json");
    }
}

fn bench(c: &mut Criterion) {
    for s in Sample::ALL {
        let mut g = c.benchmark_group(format!("roundtrip-{}", s.name()));
        g.throughput(Throughput::Elements(1));
        for (name, mut f) in codecs() {
            let mut id = 0u32;
            g.bench_function(name, |b| {
                b.iter(|| {
                    id = id.wrapping_add(1);
                    f(black_box(s), id)
                })
            });
        }
        g.finish();
    }
}

fn main() {
    count_allocations();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
