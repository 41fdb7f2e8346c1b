//! A file read through a limit: the whole file for a bounded source, or,
//! when a source follows a file that is still being written, only up to the
//! end of its last whole row, so a row half written is never read as one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use super::Rows;

/// A file and how far of it may be read.
pub(crate) struct Growing {
    file: File,
    pos: u64,
    /// Bytes that may be read (`u64::MAX`: all there is).
    limit: u64,
    /// Following: how the rows end, how far the file was scanned for row
    /// ends, and whether that scan ended inside a quoted CSV cell.
    rows: Option<Rows>,
    scanned: u64,
    quoted: bool,
}

impl Growing {
    /// The whole file may be read.
    pub(crate) fn whole(file: File) -> Growing {
        Growing {
            file,
            pos: 0,
            limit: u64::MAX,
            rows: None,
            scanned: 0,
            quoted: false,
        }
    }

    /// The file is still being written: rows are read as they are whole,
    /// from `from` (a row start).
    pub(crate) fn following(file: File, rows: Rows, from: u64) -> std::io::Result<Growing> {
        let mut g = Growing {
            file,
            pos: from,
            limit: from,
            rows: Some(rows),
            scanned: from,
            quoted: false,
        };
        g.grow()?;
        Ok(g)
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// Following: takes in the whole rows written since the last call;
    /// returns whether there are new ones.
    pub(crate) fn grow(&mut self) -> std::io::Result<bool> {
        let Some(rows) = self.rows else {
            return Ok(false);
        };
        let len = self.file.metadata()?.len();
        if len < self.scanned {
            // cut back under the reader (copy-and-truncate rotation): the
            // caller sees it through `truncated`
            return Ok(false);
        }
        let before = self.limit;
        let mut buf = vec![0u8; 1 << 16];
        while self.scanned < len {
            let want = ((len - self.scanned) as usize).min(buf.len());
            let n = self.file.read_at(&mut buf[..want], self.scanned)?;
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                match b {
                    b'"' if rows == Rows::Csv => self.quoted = !self.quoted,
                    b'\n' if !self.quoted => self.limit = self.scanned + i as u64 + 1,
                    _ => {}
                }
            }
            self.scanned += n as u64;
        }
        Ok(self.limit > before)
    }

    /// Whether the file is now shorter than what was read of it.
    pub(crate) fn truncated(&self) -> std::io::Result<bool> {
        Ok(self.file.metadata()?.len() < self.pos.min(self.limit))
    }

    /// The file will not be written again (it was rotated away): the rest
    /// of it, a last row without its line end included, may be read.
    pub(crate) fn close_out(&mut self) {
        self.limit = u64::MAX;
        self.rows = None;
    }
}

impl Read for Growing {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let room = self.limit.saturating_sub(self.pos);
        if room == 0 {
            return Ok(0);
        }
        let want = (buf.len() as u64).min(room) as usize;
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Growing {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(n) => n,
            SeekFrom::Current(d) => self.pos.checked_add_signed(d).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
            })?,
            SeekFrom::End(d) => {
                let len = self.file.metadata()?.len();
                len.checked_add_signed(d).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
                })?
            }
        };
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_half_written_row_is_not_read_until_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        let mut w = File::create(&p).unwrap();
        w.write_all(b"a,b\n1,\"x\ny").unwrap();
        let mut g = Growing::following(File::open(&p).unwrap(), Rows::Csv, 0).unwrap();
        let mut s = String::new();
        g.read_to_string(&mut s).unwrap();
        assert_eq!(s, "a,b\n", "the quoted newline does not end the row");
        w.write_all(b"\"\n2,").unwrap();
        assert!(g.grow().unwrap());
        s.clear();
        g.read_to_string(&mut s).unwrap();
        assert_eq!(s, "1,\"x\ny\"\n");
        assert!(!g.grow().unwrap(), "nothing whole since");
        g.close_out();
        s.clear();
        g.read_to_string(&mut s).unwrap();
        assert_eq!(s, "2,", "a rotated file is read to its end");
    }
}
