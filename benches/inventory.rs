//! Times `inventory::collect` on this machine (`/`) and on a fixture tree: 200 timed
//! runs after 20 warm-up runs, median/min/max in milliseconds. IPA's
//! `list_hardware_info` takes about 160 ms in process on the reference VM; the aim is
//! under 5 ms. Run with `cargo bench --bench inventory`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ira::inventory::{self, FileAddrs, InventoryOptions, SystemAddrs};

const WARM_UP: usize = 20;
const RUNS: usize = 200;

fn time(label: &str, opts: &InventoryOptions, addrs: &dyn inventory::AddrSource) {
    for _ in 0..WARM_UP {
        inventory::collect_with(opts, addrs).expect("inventory");
    }
    let mut samples: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            let inv = inventory::collect_with(opts, addrs).expect("inventory");
            let elapsed = start.elapsed();
            std::hint::black_box(inv);
            elapsed
        })
        .collect();
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "inventory::collect {label:<28} n={RUNS} median {:.3} ms  min {:.3} ms  max {:.3} ms",
        ms(samples[RUNS / 2]),
        ms(samples[0]),
        ms(samples[RUNS - 1])
    );
}

fn main() {
    let live = InventoryOptions {
        root: PathBuf::from("/"),
        ..Default::default()
    };
    time("(this machine, /)", &live, &SystemAddrs);

    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sysfs/nvme-sata");
    let opts = InventoryOptions {
        root: fixture.clone(),
        ..Default::default()
    };
    let addrs = FileAddrs::new(fixture.join(".ira-fixture/addrs.json"));
    time("(fixture nvme-sata)", &opts, &addrs);
}
