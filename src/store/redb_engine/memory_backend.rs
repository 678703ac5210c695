//! The storage of the memory database.
//!
//! redb's own in-memory backend keeps the database in one `Vec` that it
//! grows with `resize`: that writes zeros over every new byte, so the whole
//! length is resident at once, used or not, and when the `Vec` outgrows its
//! capacity it is copied whole into one twice as large. This backend keeps
//! the bytes in chunks mapped when first written, each an anonymous memory
//! map of its own: a page of the database that redb never wrote takes no
//! memory (the system gives a map's pages zeroed when first touched),
//! growing copies nothing, and a chunk dropped (the database shrunk, or
//! dropped after a compaction) is given back to the system at once, where
//! the allocator would keep freed memory for itself a while.

use std::io;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use memmap2::{MmapMut, MmapOptions};
use redb::StorageBackend;

/// Bytes per chunk.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct ChunkedMemory(RwLock<Chunks>);

#[derive(Debug, Default)]
struct Chunks {
    len: u64,
    /// `None`: never written, all zeros.
    chunks: Vec<Option<MmapMut>>,
}

impl ChunkedMemory {
    fn read_lock(&self) -> io::Result<RwLockReadGuard<'_, Chunks>> {
        self.0
            .read()
            .map_err(|_| io::Error::other("memory database lock poisoned"))
    }

    fn write_lock(&self) -> io::Result<RwLockWriteGuard<'_, Chunks>> {
        self.0
            .write()
            .map_err(|_| io::Error::other("memory database lock poisoned"))
    }
}

impl Chunks {
    /// An error unless `offset..offset + len` is within the database.
    fn check_range(&self, offset: u64, len: usize) -> io::Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(out_of_range()),
        }
    }
}

/// The pieces of `offset..offset + len` by chunk: (chunk, start in it, length).
fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (usize, usize, usize)> {
    let mut at = offset;
    let end = offset + len as u64;
    std::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let chunk = (at / CHUNK as u64) as usize;
        let start = (at % CHUNK as u64) as usize;
        let n = (CHUNK - start).min((end - at) as usize);
        at += n as u64;
        Some((chunk, start, n))
    })
}

fn out_of_range() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "beyond the memory database's end",
    )
}

impl StorageBackend for ChunkedMemory {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.read_lock()?.len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let chunks = self.read_lock()?;
        chunks.check_range(offset, out.len())?;
        let mut done = 0;
        for (chunk, start, n) in pieces(offset, out.len()) {
            let target = &mut out[done..done + n];
            match chunks.chunks.get(chunk).and_then(Option::as_ref) {
                Some(bytes) => target.copy_from_slice(&bytes[start..start + n]),
                None => target.fill(0),
            }
            done += n;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut chunks = self.write_lock()?;
        let count = usize::try_from(len.div_ceil(CHUNK as u64)).map_err(|_| out_of_range())?;
        if len < chunks.len {
            // What is cut off reads as zeros if the database grows again.
            let tail = (len % CHUNK as u64) as usize;
            if tail > 0
                && let Some(Some(last)) = chunks.chunks.get_mut(count - 1)
            {
                last[tail..].fill(0);
            }
        }
        chunks.chunks.resize_with(count, || None);
        chunks.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut chunks = self.write_lock()?;
        chunks.check_range(offset, data.len())?;
        let mut done = 0;
        for (chunk, start, n) in pieces(offset, data.len()) {
            let slot = &mut chunks.chunks[chunk];
            let bytes = match slot {
                Some(bytes) => bytes,
                None => slot.insert(MmapOptions::new().len(CHUNK).map_anon()?),
            };
            bytes[start..start + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads give back what was written, across chunk boundaries, zeros
    /// where nothing was, and zeros again past a shrink and a regrowth.
    #[test]
    fn reads_what_was_written_and_zeros_elsewhere() {
        let memory = ChunkedMemory::default();
        memory.set_len(3 * CHUNK as u64 + 10).unwrap();
        let data: Vec<u8> = (0..CHUNK + 100).map(|i| (i % 251) as u8 + 1).collect();
        let at = CHUNK as u64 - 50;
        memory.write(at, &data).unwrap();

        let mut back = vec![0u8; data.len()];
        memory.read(at, &mut back).unwrap();
        assert_eq!(back, data);
        let mut before = vec![7u8; 60];
        memory.read(at - 10, &mut before).unwrap();
        assert_eq!(&before[..10], &[0; 10]);
        assert_eq!(&before[10..], &data[..50]);
        let mut untouched = vec![7u8; 10];
        memory.read(3 * CHUNK as u64, &mut untouched).unwrap();
        assert_eq!(untouched, vec![0; 10]);
        assert!(memory.read(3 * CHUNK as u64 + 5, &mut [0; 6]).is_err());
        assert!(memory.write(3 * CHUNK as u64 + 5, &[1; 6]).is_err());

        memory.set_len(at + 20).unwrap();
        memory.set_len(3 * CHUNK as u64).unwrap();
        let mut regrown = vec![7u8; 40];
        memory.read(at, &mut regrown).unwrap();
        assert_eq!(&regrown[..20], &data[..20]);
        assert_eq!(&regrown[20..], &[0; 20]);
        assert_eq!(memory.len().unwrap(), 3 * CHUNK as u64);
    }
}
