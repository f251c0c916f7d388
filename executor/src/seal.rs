//! Sealing checkpoint images: a checkpoint is a process's whole memory,
//! secrets included, and it sits in the `CHECKPOINTS` bucket (on the NATS
//! servers' disks) while it travels. So it is encrypted and authenticated
//! with a key only executors hold (`--images-key`), in segments, and the
//! target authenticates each segment before a byte of it reaches the
//! unpacker.
//!
//! Format: a header (`LSSEAL2\0` and a random 16-byte salt), then segments
//! of [`SEGMENT`] plaintext bytes, each sealed with AES-256-GCM (ring,
//! already in the tree through rustls: audited, AES-NI accelerated, no new
//! crate; twice ChaCha20-Poly1305's throughput on these machines, see
//! BENCHMARKS.md) under the nonce `0 ‖ counter ‖ last`, with a key of its
//! own for each image (HKDF-SHA256 of the executors' key, the salt and the
//! object's name), so no nonce is ever used twice under one key. The
//! counter stops reordering, the last flag stops truncation (the STREAM
//! construction of Hoang, Reyhanitabar, Rogaway and Vizár), and the
//! associated data is the header plus the object's name, so an image cannot
//! be passed off as another migration's.
//!
//! The key is the process's configuration, installed once at start
//! ([`install`]) and read where images are packed and unpacked: the saga
//! that calls those is being reworked, and the key is not its business.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::OnceLock;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf;

/// Plaintext bytes per sealed segment.
pub const SEGMENT: usize = 256 * 1024;
/// Bytes a segment grows by when sealed (the Poly1305 tag).
pub const TAG: usize = 16;
/// Marks a sealed image.
const MAGIC: &[u8; 8] = b"LSSEAL2\0";
/// Length of the per-image salt.
const SALT: usize = 16;
/// Length of the header: magic and salt.
const HEADER: usize = 8 + SALT;

/// Why an image key cannot be loaded or an image cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// the key file is unreadable or not 64 hex digits
    #[error("images key {path}: {message}")]
    Key {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The key images are sealed with (each image with a key derived from it).
pub struct ImagesKey([u8; 32]);

impl std::fmt::Debug for ImagesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImagesKey(..)")
    }
}

impl ImagesKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Self(*bytes)
    }

    /// The key of one image: HKDF-SHA256 of this key, the image's salt and
    /// its name.
    fn for_image(&self, salt: &[u8], object: &str) -> LessSafeKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(&self.0);
        let info = [b"loadshift image".as_slice(), object.as_bytes()];
        let okm = prk
            .expand(&info, &AES_256_GCM)
            // The output length is AES-256's key length, far below HKDF's
            // limit of 255 hashes: this cannot fail.
            .expect("an HKDF output of one key length");
        LessSafeKey::new(UnboundKey::from(okm))
    }

    /// Reads a key file: 64 hex digits (what `loadshift auth init` writes).
    ///
    /// # Errors
    /// [`SealError::Key`] when the file is unreadable or malformed.
    pub fn load(path: &Path) -> Result<Self, SealError> {
        let fail = |message: String| SealError::Key {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let hex = text.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(fail("not 64 hex digits (32 bytes)".into()));
        }
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| fail(e.to_string()))?;
        }
        Ok(Self::from_bytes(&bytes))
    }
}

static KEY: OnceLock<ImagesKey> = OnceLock::new();

/// Makes `key` the one this process seals and opens images with. A second
/// call is ignored (the key is configuration, set once at start).
pub fn install(key: ImagesKey) {
    let _ = KEY.set(key);
}

/// The installed key, if any.
pub fn key() -> Option<&'static ImagesKey> {
    KEY.get()
}

fn nonce(counter: u32, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[7..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::assume_unique_for_key(n)
}

fn aad(header: &[u8], object: &str) -> Vec<u8> {
    let mut a = header.to_vec();
    a.extend_from_slice(object.as_bytes());
    a
}

/// A `Write` that seals what it is given into `inner`; without a key it
/// passes everything through unchanged. [`Writer::finish`] seals the last
/// segment and hands `inner` back.
pub struct Writer<W: Write> {
    inner: W,
    key: Option<LessSafeKey>,
    aad: Vec<u8>,
    buf: Vec<u8>,
    counter: u32,
}

impl<W: Write> Writer<W> {
    /// Seals into `inner` for the image named `object`, with `key`.
    ///
    /// # Errors
    /// When the header cannot be written or no random prefix can be drawn.
    pub fn new(mut inner: W, key: Option<&ImagesKey>, object: &str) -> io::Result<Self> {
        let mut salt = [0u8; SALT];
        let mut header = MAGIC.to_vec();
        let key = match key {
            Some(k) => {
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
                    .map_err(|_| io::Error::other("no randomness for the image's salt"))?;
                header.extend_from_slice(&salt);
                inner.write_all(&header)?;
                Some(k.for_image(&salt, object))
            }
            None => None,
        };
        Ok(Self {
            inner,
            key,
            aad: aad(&header, object),
            buf: Vec::with_capacity(SEGMENT + TAG),
            counter: 0,
        })
    }

    fn seal_segment(&mut self, last: bool) -> io::Result<()> {
        let Some(key) = &self.key else {
            return Ok(());
        };
        let mut seg = std::mem::replace(&mut self.buf, Vec::with_capacity(SEGMENT + TAG));
        key.seal_in_place_append_tag(
            nonce(self.counter, last),
            Aad::from(self.aad.as_slice()),
            &mut seg,
        )
        .map_err(|_| io::Error::other("sealing a segment failed"))?;
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| io::Error::other("image too large to seal (2^32 segments)"))?;
        self.inner.write_all(&seg)
    }

    /// Seals what is left as the last segment and returns the inner writer.
    ///
    /// # Errors
    /// When the inner writer fails.
    pub fn finish(mut self) -> io::Result<W> {
        self.seal_segment(true)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Writer<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.key.is_none() {
            return self.inner.write(data);
        }
        let n = data.len().min(SEGMENT - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == SEGMENT {
            self.seal_segment(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A `Read` that opens a sealed image, releasing each segment's bytes only
/// once the segment is authenticated; without a key it passes everything
/// through, but refuses a sealed image (and with a key, an unsealed one:
/// otherwise a forger would simply send plaintext).
pub struct Reader<'k, R: Read> {
    inner: R,
    key: Option<&'k ImagesKey>,
    state: Option<Opening>,
    plain: Vec<u8>,
    pos: usize,
    done: bool,
    object: String,
}

struct Opening {
    key: Option<LessSafeKey>,
    aad: Vec<u8>,
    counter: u32,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads until `buf` is full or the input ends; returns how many bytes.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

impl<'k, R: Read> Reader<'k, R> {
    /// Opens `inner`, the image named `object`, with `key`.
    pub fn new(inner: R, key: Option<&'k ImagesKey>, object: &str) -> Self {
        Self {
            inner,
            key,
            state: None,
            plain: Vec::new(),
            pos: 0,
            done: false,
            object: object.to_string(),
        }
    }

    fn start(&mut self, key: &ImagesKey) -> io::Result<()> {
        let mut header = [0u8; HEADER];
        let n = read_full(&mut self.inner, &mut header)?;
        if n < HEADER || &header[..8] != MAGIC {
            return Err(invalid(
                "the image is not sealed, and this executor opens only sealed images",
            ));
        }
        self.state = Some(Opening {
            key: Some(key.for_image(&header[8..], &self.object)),
            aad: aad(&header, &self.object),
            counter: 0,
        });
        Ok(())
    }

    /// Reads and authenticates the next segment into `plain`.
    fn next_segment(&mut self, key: &ImagesKey) -> io::Result<()> {
        if self.state.is_none() {
            self.start(key)?;
        }
        let mut seg = vec![0u8; SEGMENT + TAG];
        let n = read_full(&mut self.inner, &mut seg)?;
        if n < TAG {
            return Err(invalid("the sealed image is truncated (no last segment)"));
        }
        seg.truncate(n);
        // A full segment is never the last: the writer always ends with a
        // short (possibly empty) one.
        let last = n < SEGMENT + TAG;
        let st = self.state.as_mut().expect("started above");
        let image_key = st.key.as_ref().expect("set when started with a key");
        let plain = image_key
            .open_in_place(
                nonce(st.counter, last),
                Aad::from(st.aad.as_slice()),
                &mut seg,
            )
            .map_err(|_| {
                invalid(format!(
                    "segment {} of the image fails authentication: it was altered, \
                     truncated, or sealed for another image or with another key",
                    st.counter
                ))
            })?
            .len();
        seg.truncate(plain);
        st.counter = st.counter.wrapping_add(1);
        if last {
            let mut extra = [0u8; 1];
            if read_full(&mut self.inner, &mut extra)? != 0 {
                return Err(invalid("bytes after the last segment of the sealed image"));
            }
            self.done = true;
        }
        self.plain = seg;
        self.pos = 0;
        Ok(())
    }
}

impl<R: Read> Read for Reader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let Some(key) = self.key else {
            if self.state.is_none() {
                // Peek whether a sealed image arrived at a keyless executor.
                let mut head = [0u8; 8];
                let n = read_full(&mut self.inner, &mut head)?;
                if n == 8 && &head == MAGIC {
                    return Err(invalid(
                        "the image is sealed and this executor has no images key (--images-key)",
                    ));
                }
                self.plain = head[..n].to_vec();
                self.pos = 0;
                self.state = Some(Opening {
                    key: None,
                    aad: Vec::new(),
                    counter: 0,
                });
            }
            if self.pos < self.plain.len() {
                let n = out.len().min(self.plain.len() - self.pos);
                out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            return self.inner.read(out);
        };
        while self.pos == self.plain.len() {
            if self.done {
                return Ok(0);
            }
            self.next_segment(key)?;
        }
        let n = out.len().min(self.plain.len() - self.pos);
        out[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> ImagesKey {
        ImagesKey::from_bytes(&[b; 32])
    }

    fn seal(k: Option<&ImagesKey>, object: &str, data: &[u8]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), k, object).unwrap();
        w.write_all(data).unwrap();
        w.finish().unwrap()
    }

    fn open(k: Option<&ImagesKey>, object: &str, sealed: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        Reader::new(sealed, k, object).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn sealed_images_round_trip_at_every_segment_boundary() {
        let k = key(1);
        for len in [0, 1, SEGMENT - 1, SEGMENT, SEGMENT + 1, 3 * SEGMENT] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = seal(Some(&k), "m1", &data);
            assert_eq!(sealed.len(), HEADER + len + (len / SEGMENT + 1) * TAG);
            if len > 0 {
                assert_ne!(&sealed[HEADER..HEADER + len.min(16)], &data[..len.min(16)]);
            }
            assert_eq!(open(Some(&k), "m1", &sealed).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn one_flipped_byte_anywhere_is_refused() {
        let k = key(2);
        let data = vec![9u8; 2 * SEGMENT + 100];
        let sealed = seal(Some(&k), "m1", &data);
        for at in [3, HEADER + 5, SEGMENT + TAG + HEADER + 7, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            assert!(open(Some(&k), "m1", &bad).is_err(), "flip at {at} accepted");
        }
    }

    #[test]
    fn truncated_reordered_renamed_or_foreign_images_are_refused() {
        let k = key(3);
        let data = vec![5u8; 2 * SEGMENT];
        let sealed = seal(Some(&k), "m1", &data);
        // Cut at a segment boundary: no last segment.
        assert!(open(Some(&k), "m1", &sealed[..HEADER + SEGMENT + TAG]).is_err());
        // Another migration's name.
        assert!(open(Some(&k), "m2", &sealed).is_err());
        // Another key.
        assert!(open(Some(&key(4)), "m1", &sealed).is_err());
        // Swap the first two segments.
        let mut swapped = sealed[..HEADER].to_vec();
        swapped.extend_from_slice(&sealed[HEADER + SEGMENT + TAG..HEADER + 2 * (SEGMENT + TAG)]);
        swapped.extend_from_slice(&sealed[HEADER..HEADER + SEGMENT + TAG]);
        swapped.extend_from_slice(&sealed[HEADER + 2 * (SEGMENT + TAG)..]);
        assert!(open(Some(&k), "m1", &swapped).is_err());
    }

    #[test]
    fn plaintext_and_sealed_images_do_not_mix() {
        let k = key(5);
        let plain = seal(None, "m1", b"hello tar");
        assert_eq!(plain, b"hello tar");
        assert_eq!(open(None, "m1", &plain).unwrap(), b"hello tar");
        let err = open(Some(&k), "m1", &plain).unwrap_err();
        assert!(err.to_string().contains("not sealed"), "{err}");
        let sealed = seal(Some(&k), "m1", b"hello tar");
        let err = open(None, "m1", &sealed).unwrap_err();
        assert!(err.to_string().contains("--images-key"), "{err}");
    }

    #[test]
    fn a_key_file_is_64_hex_digits() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("k");
        std::fs::write(&good, format!("{}\n", "ab".repeat(32))).unwrap();
        assert!(ImagesKey::load(&good).is_ok());
        let bad = dir.path().join("b");
        std::fs::write(&bad, "xyz").unwrap();
        assert!(ImagesKey::load(&bad).is_err());
        assert!(ImagesKey::load(&dir.path().join("none")).is_err());
    }
}
