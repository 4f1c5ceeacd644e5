//! Checksummed test streams: every byte of every stream is a pure function of (stream id, position), so
//! a receiver verifies each byte where it lands, and a lost, duplicated or reordered byte cannot hide.
//!
//! A stream starts with a 16-byte header (magic, stream id, length) so the far end learns which stream it
//! is reading without any side channel — the backend sees the proxy's SNAT port, not the client's.

/// Bytes of the header at the start of every stream.
pub const HEADER_LEN: usize = 16;
const MAGIC: u32 = 0x686f_6c64; // "hold"

/// The byte at `pos` of the body of stream `id`.
#[inline]
pub fn byte_at(id: u32, pos: u64) -> u8 {
    let block = pos / 8;
    let mut x = (u64::from(id) << 40) ^ block ^ 0x9e37_79b9_7f4a_7c15;
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    x.to_le_bytes()[(pos % 8) as usize]
}

/// Writes the next bytes of a stream.
#[derive(Debug, Clone)]
pub struct StreamWriter {
    id: u32,
    len: u64,
    pos: u64,
    header: [u8; HEADER_LEN],
}

impl StreamWriter {
    /// A stream with a body of `len` bytes.
    pub fn new(id: u32, len: u64) -> Self {
        let mut header = [0; HEADER_LEN];
        header[..4].copy_from_slice(&MAGIC.to_be_bytes());
        header[4..8].copy_from_slice(&id.to_be_bytes());
        header[8..16].copy_from_slice(&len.to_be_bytes());
        StreamWriter { id, len, pos: 0, header }
    }

    /// Total bytes the stream has, header included.
    pub fn total(&self) -> u64 {
        self.len + HEADER_LEN as u64
    }

    /// Bytes handed out so far (header included).
    pub fn written(&self) -> u64 {
        self.pos
    }

    pub fn is_done(&self) -> bool {
        self.pos >= self.total()
    }

    /// Fills `out` with the next bytes; returns how many (0 when done).
    pub fn fill(&mut self, out: &mut [u8]) -> usize {
        let n = (self.total() - self.pos).min(out.len() as u64) as usize;
        for (i, b) in out[..n].iter_mut().enumerate() {
            let p = self.pos + i as u64;
            *b = match usize::try_from(p) {
                Ok(h) if h < HEADER_LEN => self.header[h],
                _ => byte_at(self.id, p - HEADER_LEN as u64),
            };
        }
        n
    }

    /// Marks `n` bytes of what [`StreamWriter::fill`] produced as taken (the socket may take fewer).
    pub fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n as u64).min(self.total());
    }
}

/// What a reader found in a stream so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamReport {
    pub id: Option<u32>,
    pub expected: Option<u64>,
    /// Body bytes that matched.
    pub good: u64,
    /// Bytes past the first mismatch or past the end: a duplicated, lost or corrupted byte shifts all
    /// that follows, so everything after the first bad byte counts as bad.
    pub bad: u64,
}

/// Verifies a stream as it arrives.
#[derive(Debug, Clone, Default)]
pub struct StreamReader {
    header: Vec<u8>,
    report: StreamReport,
    broken: bool,
}

impl StreamReader {
    pub fn new() -> Self {
        StreamReader { header: Vec::with_capacity(HEADER_LEN), ..Default::default() }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        if self.report.id.is_none() {
            let need = HEADER_LEN - self.header.len();
            let take = need.min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() == HEADER_LEN {
                let word = |r: std::ops::Range<usize>| self.header.get(r).unwrap_or(&[]).to_vec();
                let magic = u32::from_be_bytes(word(0..4).try_into().unwrap_or([0; 4]));
                if magic != MAGIC {
                    self.broken = true;
                }
                self.report.id = Some(u32::from_be_bytes(word(4..8).try_into().unwrap_or([0; 4])));
                self.report.expected = Some(u64::from_be_bytes(word(8..16).try_into().unwrap_or([0; 8])));
            } else {
                return;
            }
        }
        let (Some(id), Some(expected)) = (self.report.id, self.report.expected) else { return };
        for &b in data {
            let pos = self.report.good;
            if self.broken || pos >= expected || b != byte_at(id, pos) {
                self.broken = true;
                self.report.bad += 1;
            } else {
                self.report.good += 1;
            }
        }
    }

    pub fn report(&self) -> &StreamReport {
        &self.report
    }

    /// The whole body arrived, intact, and nothing more.
    pub fn is_complete(&self) -> bool {
        !self.broken && self.report.expected == Some(self.report.good)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_verifies_in_any_chunking() {
        let mut w = StreamWriter::new(7, 10_000);
        let mut r = StreamReader::new();
        let mut buf = [0u8; 333];
        while !w.is_done() {
            let n = w.fill(&mut buf);
            w.advance(n);
            r.feed(&buf[..n]);
        }
        assert!(r.is_complete(), "{:?}", r.report());
        assert_eq!(r.report().id, Some(7));
    }

    #[test]
    fn a_duplicated_byte_is_caught() {
        let mut w = StreamWriter::new(1, 1000);
        let mut all = vec![0u8; 1016];
        let n = w.fill(&mut all);
        assert_eq!(n, 1016);
        let mut r = StreamReader::new();
        r.feed(&all[..500]);
        r.feed(&all[499..]);
        assert!(!r.is_complete());
        assert!(r.report().bad > 0);
    }
}
