//! Where a bbolt database is read from.

use std::{fs::File, io, os::unix::fs::FileExt as _};

/// What a database is read from: a file (without the snapshot's trailer) or bytes in memory.
pub trait Source {
    /// The bytes available to the database.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; the caller has checked that it is within [`Source::size`].
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

impl Source for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let bytes = start
            .checked_add(buf.len())
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

/// The first `len` bytes of a file.
pub struct FileRegion<'f> {
    pub file: &'f File,
    pub len: u64,
}

impl Source for FileRegion<'_> {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
}
