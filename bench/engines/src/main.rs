//! engines-bench: picks kvs's embedded storage engine, redb 4 or fjall 3, by measuring both
//! on the write path kvs will have. Every kvs put writes one key into two tables (a ~40-byte
//! metadata record and a 100-byte value), and puts are grouped into one commit that is fsync'd
//! before the HTTP replies go out. So this measures durable group commits of B puts
//! (B = 1, 16, 64, 100), then point reads of both tables from 2 threads, each engine in a fresh
//! temp dir on the same disk as /work. It also checks when a fjall write becomes visible to
//! readers, which decides how kvs can keep readers to durable data.
//!
//! Run: `CARGO_TARGET_DIR=/tmp/engines-target nice -n 19 cargo run --release -- [--seconds N] [--dir PATH]`

use fjall::{Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use redb::{ReadableDatabase, TableDefinition};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KEYS: u64 = 10_000;
const BATCH_SIZES: [usize; 4] = [1, 16, 64, 100];
const READ_THREADS: usize = 2;
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const DATA: TableDefinition<&str, &[u8]> = TableDefinition::new("data");

/// One kvs put: a key, its metadata record and its value (random bytes, so that fjall's LZ4
/// cannot compress them away).
struct Put {
    key: String,
    meta: [u8; 40],
    value: [u8; 100],
}

/// How a fjall commit is made durable. Both are what the 3.x API offers.
#[derive(Clone, Copy, PartialEq)]
enum FjallSync {
    /// `batch.durability(Some(SyncAll)).commit()`: fsync inside commit(), under the journal
    /// lock, *before* the batch is applied to the memtables and published to readers.
    InBatch,
    /// `batch.commit()` (PersistMode::Buffer) then `db.persist(SyncAll)`: the batch is
    /// published to readers *before* the fsync.
    PersistAfter,
}

enum Engine {
    Redb(redb::Database),
    Fjall { db: fjall::Database, meta: Keyspace, data: Keyspace, sync: FjallSync },
}

impl Engine {
    fn open_redb(dir: &Path) -> Self {
        Engine::Redb(redb::Database::create(dir.join("kvs.redb")).unwrap())
    }

    fn open_fjall(dir: &Path, sync: FjallSync) -> Self {
        let db = fjall::Database::builder(dir).open().unwrap();
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default).unwrap();
        let data = db.keyspace("data", KeyspaceCreateOptions::default).unwrap();
        Engine::Fjall { db, meta, data, sync }
    }

    /// Writes every put into both tables as one commit, fsync'd before returning.
    fn commit(&self, puts: &[Put]) {
        match self {
            Engine::Redb(db) => {
                let tx = db.begin_write().unwrap(); // Durability::Immediate is the default
                {
                    let mut meta = tx.open_table(META).unwrap();
                    let mut data = tx.open_table(DATA).unwrap();
                    for p in puts {
                        meta.insert(p.key.as_str(), &p.meta[..]).unwrap();
                        data.insert(p.key.as_str(), &p.value[..]).unwrap();
                    }
                }
                tx.commit().unwrap();
            }
            Engine::Fjall { db, meta, data, sync } => {
                let mode = match sync {
                    FjallSync::InBatch => PersistMode::SyncAll,
                    FjallSync::PersistAfter => PersistMode::Buffer,
                };
                let mut batch = db.batch().durability(Some(mode));
                for p in puts {
                    batch.insert(meta, p.key.as_str(), &p.meta[..]);
                    batch.insert(data, p.key.as_str(), &p.value[..]);
                }
                batch.commit().unwrap();
                if *sync == FjallSync::PersistAfter {
                    db.persist(PersistMode::SyncAll).unwrap();
                }
            }
        }
    }

    /// Reads one key from both tables in one consistent view (redb read transaction, fjall
    /// snapshot), as a kvs GET would; true if both records were found.
    fn get_both(&self, key: &str) -> bool {
        match self {
            Engine::Redb(db) => {
                let tx = db.begin_read().unwrap();
                let meta = tx.open_table(META).unwrap().get(key).unwrap();
                let data = tx.open_table(DATA).unwrap().get(key).unwrap();
                meta.is_some() && data.is_some()
            }
            Engine::Fjall { db, meta, data, .. } => {
                let snap = db.snapshot();
                snap.get(meta, key).unwrap().is_some() && snap.get(data, key).unwrap().is_some()
            }
        }
    }
}

/// xorshift64: enough randomness for keys and payloads, without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            chunk.copy_from_slice(&self.next().to_le_bytes()[..chunk.len()]);
        }
    }
}

fn make_puts(rng: &mut Rng, next_key: &mut u64, count: usize) -> Vec<Put> {
    (0..count)
        .map(|_| {
            let mut p = Put { key: format!("k{:08}", *next_key % KEYS), meta: [0; 40], value: [0; 100] };
            *next_key += 1;
            rng.fill(&mut p.meta);
            rng.fill(&mut p.value);
            p
        })
        .collect()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// Runs batches of `batch` puts for `secs`; returns a table row.
fn bench_commits(engine: &Engine, name: &str, batch: usize, secs: Duration, next_key: &mut u64) -> String {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ batch as u64);
    let mut lat_us = Vec::new();
    let start = Instant::now();
    while start.elapsed() < secs {
        let puts = make_puts(&mut rng, next_key, batch);
        let t = Instant::now();
        engine.commit(&puts);
        lat_us.push(t.elapsed().as_micros() as u64);
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    let commits = lat_us.len() as f64;
    format!(
        "{name:<22} {batch:>4} {:>11.0} {:>11.0} {:>12.2} {:>12.2}",
        commits / elapsed,
        commits * batch as f64 / elapsed,
        percentile(&lat_us, 0.5) as f64 / 1000.0,
        percentile(&lat_us, 0.99) as f64 / 1000.0,
    )
}

/// Random gets of existing keys from `READ_THREADS` threads for `secs`; returns a table row.
fn bench_reads(engine: &Engine, name: &str, secs: Duration) -> String {
    let keys: Vec<String> = (0..KEYS).map(|n| format!("k{n:08}")).collect();
    let start = Instant::now();
    let deadline = start + secs;
    let mut lat_ns: Vec<u64> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..READ_THREADS)
            .map(|t| {
                let keys = &keys;
                s.spawn(move || {
                    let mut rng = Rng(0x2545_F491_4F6C_DD1D + t as u64);
                    let mut lat = Vec::with_capacity(1 << 20);
                    let mut t0 = Instant::now();
                    while t0 < deadline {
                        let key = &keys[(rng.next() % KEYS) as usize];
                        assert!(engine.get_both(key), "{key} missing");
                        let t1 = Instant::now();
                        lat.push((t1 - t0).as_nanos() as u64);
                        t0 = t1;
                    }
                    lat
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    lat_ns.sort_unstable();
    format!(
        "{name:<22} {:>11.0} {:>9} {:>9}",
        lat_ns.len() as f64 / elapsed,
        percentile(&lat_ns, 0.5),
        percentile(&lat_ns, 0.99),
    )
}

/// Is a fjall batch committed with PersistMode::Buffer visible before `db.persist(SyncAll)`?
fn fjall_visible_before_fsync(base: &Path) -> bool {
    let dir = tempfile::tempdir_in(base).unwrap();
    let Engine::Fjall { db, meta, .. } = Engine::open_fjall(dir.path(), FjallSync::PersistAfter) else {
        unreachable!()
    };
    let mut batch = db.batch(); // PersistMode::Buffer: written to the journal, no fsync
    batch.insert(&meta, "probe", "v");
    batch.commit().unwrap();
    let visible = meta.get("probe").unwrap().is_some() && db.snapshot().get(&meta, "probe").unwrap().is_some();
    db.persist(PersistMode::SyncAll).unwrap();
    visible
}

fn main() {
    let mut secs = 3.0;
    let mut base = std::env::temp_dir();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => secs = args.next().and_then(|s| s.parse().ok()).expect("--seconds N"),
            "--dir" => base = PathBuf::from(args.next().expect("--dir PATH")),
            _ => panic!("usage: engines-bench [--seconds N] [--dir PATH]"),
        }
    }
    let secs = Duration::from_secs_f64(secs);
    let same_disk = std::fs::metadata(&base).unwrap().dev() == std::fs::metadata("/work").map(|m| m.dev()).unwrap_or(0);
    println!("temp dirs under {} ({} /work), {:.1} s per row", base.display(),
        if same_disk { "same device as" } else { "NOT the same device as" }, secs.as_secs_f64());

    let variants = [
        ("redb", None),
        ("fjall sync-in-batch", Some(FjallSync::InBatch)),
        ("fjall commit+persist", Some(FjallSync::PersistAfter)),
    ];
    let (mut write_rows, mut read_rows) = (Vec::new(), Vec::new());
    for (name, sync) in variants {
        let dir = tempfile::Builder::new().prefix("engines-bench-").tempdir_in(&base).unwrap();
        let engine = match sync {
            None => Engine::open_redb(dir.path()),
            Some(s) => Engine::open_fjall(dir.path(), s),
        };
        let mut next_key = 0;
        for batch in BATCH_SIZES {
            eprintln!("{name}: commits of {batch} puts ...");
            write_rows.push(bench_commits(&engine, name, batch, secs, &mut next_key));
        }
        // Reads use the same code path for both fjall variants: measure them once.
        if sync != Some(FjallSync::PersistAfter) {
            engine.commit(&make_puts(&mut Rng(1), &mut 0, KEYS as usize)); // every key exists
            if let Engine::Fjall { meta, data, .. } = &engine {
                // Read from on-disk tables (+ block cache), as a long-running kvs would.
                meta.rotate_memtable_and_wait().unwrap();
                data.rotate_memtable_and_wait().unwrap();
            }
            eprintln!("{name}: reads ...");
            read_rows.push(bench_reads(&engine, name.split(' ').next().unwrap(), secs));
        }
    }

    println!("\nDurable group commits: each put = 1 key into 2 tables (40 B meta + 100 B value), {KEYS} keys cycling; fsync per commit");
    println!("{:<22} {:>4} {:>11} {:>11} {:>12} {:>12}", "engine", "B", "commits/s", "keys/s", "p50 ms", "p99 ms");
    write_rows.iter().for_each(|r| println!("{r}"));

    println!("\nPoint reads: {READ_THREADS} threads, random existing keys; 1 get = the key from both tables in one read txn / snapshot");
    println!("{:<22} {:>11} {:>9} {:>9}", "engine", "gets/s", "p50 ns", "p99 ns");
    read_rows.iter().for_each(|r| println!("{r}"));

    println!("\nfjall 3 visibility (measured + fjall-3.1.13 source):");
    println!("- batch committed with PersistMode::Buffer, before db.persist(SyncAll): visible to readers = {}",
        fjall_visible_before_fsync(&base));
    println!("- batch.durability(Some(SyncAll)).commit(): fsync runs inside commit() under the journal lock, before the");
    println!("  memtable insert and snapshot_tracker.publish(), so such a batch is visible only after its fsync (src/batch/mod.rs)");
    println!("- snapshot at a given seqno: none public (no snapshot_at); Database::snapshot() takes the current visible seqno only");
    println!("- redb (Durability::Immediate): readers see a commit only once its fsync is done (page_manager.rs commit)");
}
