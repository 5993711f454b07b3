//! A segment's column writers, with their pages compressed by one zstd context per thread.
//!
//! Parquet gives every column writer a zstd compression context and a decompression context of
//! its own, so every compressed column of every segment paid for two new contexts. Creating one
//! runs `CPUID` instructions, which trap to the hypervisor on VMs (Lambda's Firecracker VMs
//! among them), so that cost is paid per segment whatever its size (figures in
//! `docs/performance.md`).
//!
//! So a segment's column writers are configured without compression, and write their pages
//! into a [`PageStore`] of ours. It compresses each page as it arrives with the zstd context
//! its thread keeps for the life of the process, and rewrites the page header's compressed
//! size. When the column is closed, [`CompressedChunk`] gives its metadata the codec, sizes
//! and page offsets that parquet records when it compresses, and puts the dictionary page
//! first, where parquet puts it. The file's bytes are those parquet writes when it compresses
//! itself: `segment::tests::segments_are_the_bytes_parquet_itself_writes` checks that.
//!
//! The store relies on how parquet's Arrow page writer uses it: for each page, the header then
//! the page's bytes, one `put` each, and `take` only when parquet splices the chunk itself,
//! which this module does instead. Anything else (a header it cannot read, a size that does
//! not match, a v2 data page) is an error, not a wrong file.

use std::cell::RefCell;
use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use parquet::arrow::arrow_writer::{
    ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory,
};
use parquet::basic::Compression;
use parquet::column::page_store::{PageKey, PageStore, PageStoreArgs, PageStoreFactory};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::{ParquetError, Result};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{ChunkReader, Length};
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::types::SchemaDescriptor;

/// Thrift compact protocol: a field header for the next field id (delta 1) of type i32. The
/// page header's first three fields (type, uncompressed size, compressed size) start so.
const NEXT_I32_FIELD: u8 = 0x15;
/// `PageType` values (parquet.thrift).
const DATA_PAGE: i32 = 0;
const DICTIONARY_PAGE: i32 = 2;

/// The writer properties a segment's column writers get: `props` with every column
/// uncompressed (the pages are compressed in the page store), and the codec each leaf column
/// was to have, in schema order.
pub(crate) fn uncompressed_writing(
    props: WriterProperties,
    schema: &SchemaDescriptor,
) -> Result<(WriterProperties, Arc<[Option<i32>]>)> {
    let levels = schema
        .columns()
        .iter()
        .map(|c| match props.compression(c.path()) {
            Compression::UNCOMPRESSED => Ok(None),
            Compression::ZSTD(level) => Ok(Some(level.compression_level())),
            other => Err(ParquetError::General(format!(
                "column {}: segments are written with zstd or no compression, not {other}",
                c.path()
            ))),
        })
        .collect::<Result<Arc<[_]>>>()?;
    let mut builder = props.into_builder();
    for c in schema.columns() {
        builder = builder.set_column_compression(c.path().clone(), Compression::UNCOMPRESSED);
    }
    Ok((
        builder.set_compression(Compression::UNCOMPRESSED).build(),
        levels,
    ))
}

/// A column writer of a segment, whose pages are compressed as they are written.
pub(crate) struct ColumnWriter {
    writer: ArrowColumnWriter,
    pages: Arc<Mutex<Pages>>,
    level: Option<i32>,
}

/// One writer per leaf column of the file's schema, for its first row group. `levels` is the
/// zstd level of each leaf column (`None`: uncompressed), from [`uncompressed_writing`]; the
/// file writer's properties must have every column uncompressed.
pub(crate) fn column_writers<W: std::io::Write + Send>(
    file: &SerializedFileWriter<W>,
    arrow: arrow_schema::SchemaRef,
    levels: &Arc<[Option<i32>]>,
) -> Result<Vec<ColumnWriter>> {
    let factory = Arc::new(Stores {
        levels: levels.clone(),
        pages: levels.iter().map(|_| Arc::default()).collect(),
    });
    let writers = ArrowRowGroupWriterFactory::new(file, arrow)
        .with_page_store_factory(factory.clone())
        .create_column_writers(0)?;
    if writers.len() != levels.len() {
        return Err(ParquetError::General(format!(
            "{} column writers for {} leaf columns",
            writers.len(),
            levels.len()
        )));
    }
    Ok(writers
        .into_iter()
        .zip(factory.pages.iter())
        .zip(levels.iter())
        .map(|((writer, pages), &level)| ColumnWriter {
            writer,
            pages: pages.clone(),
            level,
        })
        .collect())
}

impl ColumnWriter {
    /// Encodes `leaf`'s values (pages that fill up are compressed and kept).
    pub(crate) fn write(&mut self, leaf: &ArrowLeafColumn) -> Result<()> {
        self.writer.write(leaf)
    }

    /// Flushes the last pages and closes the column: its compressed pages and metadata.
    pub(crate) fn close(self) -> Result<CompressedChunk> {
        let chunk = self.writer.close()?;
        let close = chunk.close().clone();
        // The chunk's own page list is of the keys our store returned; it holds no bytes.
        drop(chunk);
        let pages = std::mem::take(&mut *self.pages.lock().map_err(|_| poisoned())?);
        if pages.header.is_some() {
            return Err(ParquetError::General(
                "a page header was written without its page".into(),
            ));
        }
        CompressedChunk::new(pages, close, self.level)
    }
}

fn poisoned() -> ParquetError {
    ParquetError::General("a column's page store was poisoned by a panic".into())
}

/// Makes each column writer's [`PageStore`], sharing its pages with the [`ColumnWriter`].
#[derive(Debug)]
struct Stores {
    levels: Arc<[Option<i32>]>,
    pages: Vec<Arc<Mutex<Pages>>>,
}

impl PageStoreFactory for Stores {
    fn create(&self, args: &PageStoreArgs<'_>) -> Result<Box<dyn PageStore>> {
        let i = args.column_index();
        match (self.levels.get(i), self.pages.get(i)) {
            (Some(&level), Some(pages)) => Ok(Box::new(Compressing {
                pages: pages.clone(),
                level,
                next_key: 0,
            })),
            _ => Err(ParquetError::General(format!(
                "a page store for column {i} of {}",
                self.levels.len()
            ))),
        }
    }
}

/// A column's pages as they are written: header and bytes, compressed.
#[derive(Debug, Default)]
struct Pages {
    /// A page header whose page has not come yet.
    header: Option<(Bytes, Header)>,
    dictionary: Option<Page>,
    data: Vec<Page>,
}

#[derive(Debug)]
struct Page {
    header: Bytes,
    body: Bytes,
    uncompressed: usize,
}

impl Page {
    fn len(&self) -> usize {
        self.header.len() + self.body.len()
    }
}

/// The page store of one column writer.
struct Compressing {
    pages: Arc<Mutex<Pages>>,
    level: Option<i32>,
    next_key: u64,
}

impl PageStore for Compressing {
    fn put(&mut self, value: Bytes) -> Result<PageKey> {
        let mut pages = self.pages.lock().map_err(|_| poisoned())?;
        match pages.header.take() {
            None => {
                let header = Header::read(&value)?;
                pages.header = Some((value, header));
            }
            Some((header_bytes, header)) => {
                let page = header.page(&header_bytes, value, self.level)?;
                if header.page_type == DICTIONARY_PAGE {
                    if pages.dictionary.is_some() {
                        return Err(ParquetError::General(
                            "a second dictionary page in one column chunk".into(),
                        ));
                    }
                    pages.dictionary = Some(page);
                } else {
                    pages.data.push(page);
                }
            }
        }
        let key = PageKey::new(self.next_key);
        self.next_key += 1;
        Ok(key)
    }

    fn take(&mut self, key: PageKey) -> Result<Bytes> {
        Err(ParquetError::General(format!(
            "page {} taken from a segment's page store: its pages are spliced by \
             streamseal's CompressedChunk, not by parquet",
            key.get()
        )))
    }

    fn memory_size(&self) -> usize {
        self.pages.lock().map_or(0, |p| {
            p.data.iter().chain(&p.dictionary).map(Page::len).sum()
        })
    }
}

/// What a page header written without compression says.
#[derive(Debug, Clone, Copy)]
struct Header {
    page_type: i32,
    /// The page's size, uncompressed (the two size fields are equal, there being no codec).
    size: usize,
    /// Where the compressed size's value is in the header.
    compressed_at: (usize, usize),
}

impl Header {
    /// Reads the first three fields of a Thrift-compact `PageHeader`.
    fn read(bytes: &[u8]) -> Result<Header> {
        let mut at = 0;
        let mut field = |name: &str| -> Result<(i32, (usize, usize))> {
            if bytes.get(at) != Some(&NEXT_I32_FIELD) {
                return Err(ParquetError::General(format!(
                    "page header: expected the field {name} at byte {at}"
                )));
            }
            let start = at + 1;
            let (value, end) = read_zigzag_i32(bytes, start)?;
            at = end;
            Ok((value, (start, end)))
        };
        let (page_type, _) = field("type")?;
        let (uncompressed, _) = field("uncompressed_page_size")?;
        let (compressed, compressed_at) = field("compressed_page_size")?;
        // Field 4, a CRC, would be of the uncompressed bytes: the page would no longer match it.
        if bytes.get(compressed_at.1) == Some(&NEXT_I32_FIELD) {
            return Err(ParquetError::General(
                "page header: a page CRC, which compressing the page would break; segments \
                 are written without page CRCs"
                    .into(),
            ));
        }
        if page_type != DATA_PAGE && page_type != DICTIONARY_PAGE {
            return Err(ParquetError::General(format!(
                "page header: page type {page_type}; segments have v1 data pages and \
                 dictionary pages"
            )));
        }
        let size = usize::try_from(uncompressed)
            .ok()
            .filter(|_| uncompressed == compressed)
            .ok_or_else(|| {
                ParquetError::General(format!(
                    "page header: sizes {uncompressed} and {compressed} of a page written \
                     uncompressed"
                ))
            })?;
        Ok(Header {
            page_type,
            size,
            compressed_at,
        })
    }

    /// The page of `body` (the bytes this header announced), compressed at `level`.
    fn page(&self, header: &Bytes, body: Bytes, level: Option<i32>) -> Result<Page> {
        if body.len() != self.size {
            return Err(ParquetError::General(format!(
                "a page of {} bytes after a header of {}",
                body.len(),
                self.size
            )));
        }
        let uncompressed = body.len();
        let Some(level) = level else {
            return Ok(Page {
                header: header.clone(),
                body,
                uncompressed,
            });
        };
        let body = compress(level, &body)?;
        let size = i32::try_from(body.len())
            .map_err(|_| ParquetError::General(format!("a page of {} bytes", body.len())))?;
        let (start, end) = self.compressed_at;
        let mut rewritten = Vec::with_capacity(header.len() + 5);
        rewritten.extend_from_slice(&header[..start]);
        write_zigzag_i32(&mut rewritten, size);
        rewritten.extend_from_slice(&header[end..]);
        Ok(Page {
            header: Bytes::from(rewritten),
            body,
            uncompressed,
        })
    }
}

/// A Thrift-compact i32 (zigzag varint) at `at`: the value and the index after it.
fn read_zigzag_i32(bytes: &[u8], at: usize) -> Result<(i32, usize)> {
    let mut value: u32 = 0;
    for (n, &b) in bytes.iter().skip(at).take(5).enumerate() {
        value |= u32::from(b & 0x7f) << (7 * n);
        if b & 0x80 == 0 {
            let decoded = ((value >> 1) as i32) ^ -((value & 1) as i32);
            return Ok((decoded, at + n + 1));
        }
    }
    Err(ParquetError::General(format!(
        "page header: no 32-bit varint at byte {at}"
    )))
}

fn write_zigzag_i32(out: &mut Vec<u8>, value: i32) {
    let mut v = ((value << 1) ^ (value >> 31)) as u32;
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

thread_local! {
    /// This thread's zstd context (and its level), made on its first page and kept: making one
    /// is what parquet did per column.
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    /// Where pages are compressed before being copied out at their size: reused, it stays
    /// in cache, where a new buffer per page would be fresh memory each time.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// `input` as one zstd frame at `level`: the bytes parquet's own zstd codec makes.
fn compress(level: i32, input: &[u8]) -> Result<Bytes> {
    let failed = |e: std::io::Error| ParquetError::External(Box::new(e));
    COMPRESSOR.with_borrow_mut(|compressor| {
        if compressor.as_ref().is_none_or(|(l, _)| *l != level) {
            *compressor = Some((level, zstd::bulk::Compressor::new(level).map_err(failed)?));
        }
        let Some((_, context)) = compressor.as_mut() else {
            return Err(ParquetError::General("no zstd context".into()));
        };
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            scratch.reserve(zstd::zstd_safe::compress_bound(input.len()));
            let n = context.compress_to_buffer(input, scratch).map_err(failed)?;
            Ok(Bytes::copy_from_slice(&scratch[..n]))
        })
    })
}

/// A closed column of a segment: its pages in file order and the metadata that describes them.
pub(crate) struct CompressedChunk {
    pages: Vec<Bytes>,
    len: u64,
    close: ColumnCloseResult,
}

impl std::fmt::Debug for CompressedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressedChunk")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl CompressedChunk {
    /// The chunk of `pages`, with `close` (the column writer's, which wrote them uncompressed)
    /// describing them as parquet does when it compresses: codec, sizes, the dictionary page
    /// first and the data pages' offsets.
    fn new(pages: Pages, mut close: ColumnCloseResult, level: Option<i32>) -> Result<Self> {
        let Pages {
            dictionary, data, ..
        } = pages;
        let dictionary_len = dictionary.as_ref().map_or(0, Page::len);
        let in_order: Vec<Page> = dictionary.into_iter().chain(data).collect();
        let compressed: usize = in_order.iter().map(Page::len).sum();
        let uncompressed: usize = in_order
            .iter()
            .map(|p| p.header.len() + p.uncompressed)
            .sum();
        let codec = match level {
            None => Compression::UNCOMPRESSED,
            Some(level) => Compression::ZSTD(parquet::basic::ZstdLevel::try_new(level)?),
        };
        let size = |n: usize| {
            i64::try_from(n).map_err(|_| ParquetError::General(format!("a chunk of {n} bytes")))
        };
        close.metadata = close
            .metadata
            .into_builder()
            .set_compression(codec)
            .set_total_compressed_size(size(compressed)?)
            .set_total_uncompressed_size(size(uncompressed)?)
            .set_dictionary_page_offset((dictionary_len > 0).then_some(0))
            .set_data_page_offset(size(dictionary_len)?)
            .build()?;
        close.bytes_written = compressed as u64;
        let data_pages = &in_order[usize::from(dictionary_len > 0)..];
        if let Some(index) = close.offset_index.as_mut() {
            if index.page_locations.len() != data_pages.len() {
                return Err(ParquetError::General(format!(
                    "an offset index of {} pages for {} data pages",
                    index.page_locations.len(),
                    data_pages.len()
                )));
            }
            let mut offset = size(dictionary_len)?;
            for (location, page) in index.page_locations.iter_mut().zip(data_pages) {
                location.offset = offset;
                location.compressed_page_size = i32::try_from(page.len()).map_err(|_| {
                    ParquetError::General(format!("a page of {} bytes", page.len()))
                })?;
                offset += size(page.len())?;
            }
        }
        Ok(CompressedChunk {
            pages: in_order
                .into_iter()
                .flat_map(|p| [p.header, p.body])
                .collect(),
            len: compressed as u64,
            close,
        })
    }

    /// Appends this column chunk to `row_group`, whose next column it must be.
    pub(crate) fn append_to_row_group<W: std::io::Write + Send>(
        self,
        row_group: &mut SerializedRowGroupWriter<'_, W>,
    ) -> Result<()> {
        let CompressedChunk { pages, len, close } = self;
        row_group.append_column(&PagesReader { pages, len }, close)
    }
}

/// A column chunk's pages as the [`ChunkReader`] `append_column` copies from.
struct PagesReader {
    pages: Vec<Bytes>,
    len: u64,
}

impl Length for PagesReader {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for PagesReader {
    type T = PagesRead;

    fn get_read(&self, start: u64) -> Result<PagesRead> {
        let mut read = PagesRead {
            pages: self.pages.clone().into_iter(),
            current: Bytes::new(),
        };
        let mut skip = start;
        while skip > 0 {
            if read.current.is_empty() {
                read.current = read.pages.next().ok_or_else(|| {
                    ParquetError::EOF(format!("offset {start} of a {}-byte chunk", self.len))
                })?;
            }
            let n = read
                .current
                .len()
                .min(usize::try_from(skip).unwrap_or(usize::MAX));
            read.current = read.current.slice(n..);
            skip -= n as u64;
        }
        Ok(read)
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes> {
        let mut out = Vec::with_capacity(length);
        self.get_read(start)?
            .take(length as u64)
            .read_to_end(&mut out)
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        if out.len() != length {
            return Err(ParquetError::EOF(format!(
                "{length} bytes at offset {start} of a {}-byte chunk",
                self.len
            )));
        }
        Ok(Bytes::from(out))
    }
}

/// Reads a column chunk's pages one after the other.
struct PagesRead {
    pages: std::vec::IntoIter<Bytes>,
    current: Bytes,
}

impl Read for PagesRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.pages.next() {
                Some(page) => self.current = page,
                None => return Ok(0),
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_varints_round_trip() {
        for v in [0, 1, -1, 63, 64, 127, 128, 300, 1 << 20, i32::MAX, i32::MIN] {
            let mut out = Vec::new();
            write_zigzag_i32(&mut out, v);
            assert_eq!(read_zigzag_i32(&out, 0).ok(), Some((v, out.len())), "{v}");
        }
        // Unterminated, or longer than a 32-bit value takes.
        assert!(read_zigzag_i32(&[0x80, 0x80], 0).is_err());
        assert!(read_zigzag_i32(&[0x80; 6], 0).is_err());
    }

    #[test]
    fn headers_it_cannot_rewrite_are_errors() {
        // type 0, sizes 10 and 10, then the rest of a header.
        let good = [0x15, 0x00, 0x15, 0x14, 0x15, 0x14, 0x2c, 0x00];
        let header = Header::read(&good).expect("header");
        assert_eq!((header.page_type, header.size), (DATA_PAGE, 10));
        assert_eq!(header.compressed_at, (5, 6));
        // A v2 data page; sizes that differ (a page already compressed); a field out of place;
        // a CRC (field 4).
        for bad in [
            [0x15, 0x06, 0x15, 0x14, 0x15, 0x14, 0x2c, 0x00],
            [0x15, 0x00, 0x15, 0x14, 0x15, 0x12, 0x2c, 0x00],
            [0x15, 0x00, 0x25, 0x14, 0x15, 0x14, 0x2c, 0x00],
            [0x15, 0x00, 0x15, 0x14, 0x15, 0x14, 0x15, 0x02],
        ] {
            assert!(Header::read(&bad).is_err(), "{bad:?}");
        }
        // A page whose size is not the header's.
        let page = header.page(
            &Bytes::copy_from_slice(&good),
            Bytes::from(vec![7; 9]),
            Some(1),
        );
        assert!(page.is_err());
        let page = header
            .page(
                &Bytes::copy_from_slice(&good),
                Bytes::from(vec![7; 10]),
                Some(1),
            )
            .expect("page");
        assert_eq!(page.uncompressed, 10);
        let rewritten = Header::read(&page.header);
        assert!(rewritten.is_err(), "the sizes now differ");
        assert_eq!(&page.header[6..], &good[6..]);
    }

    #[test]
    fn a_thread_keeps_one_context_and_one_page_sized_buffer() {
        // What a thread keeps after compressing pages: one zstd context, and a scratch buffer
        // no larger than its largest page needs. (Run with --nocapture for the sizes.)
        std::thread::spawn(|| {
            let page: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
            for input in [&page[..], &page[..1000], &page[..]] {
                let out = compress(1, input).expect("compressed");
                let mut back = Vec::with_capacity(input.len());
                zstd::bulk::Decompressor::new()
                    .and_then(|mut d| d.decompress_to_buffer(&out, &mut back))
                    .expect("decompressed");
                assert_eq!(back, input);
            }
            let context = COMPRESSOR.with_borrow_mut(|c| {
                c.as_mut()
                    .map(|(level, c)| (*level, c.context_mut().sizeof()))
            });
            let scratch = SCRATCH.with_borrow(Vec::capacity);
            let Some((1, context)) = context else {
                panic!("no level-1 context kept: {context:?}");
            };
            println!("kept per thread: a {context}-byte zstd context, a {scratch}-byte buffer");
            assert!(
                scratch >= page.len() && scratch <= 2 * page.len(),
                "{scratch}"
            );
            assert!(context > 0 && context < 8 << 20, "{context}");
            // Another level replaces the context rather than adding one.
            compress(3, &page[..1000]).expect("compressed");
            let level = COMPRESSOR.with_borrow(|c| c.as_ref().map(|(l, _)| *l));
            assert_eq!(level, Some(3));
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn pages_read_back_in_order_from_any_offset() {
        let reader = PagesReader {
            pages: vec![
                Bytes::from_static(b"abc"),
                Bytes::new(),
                Bytes::from_static(b"defg"),
            ],
            len: 7,
        };
        for start in 0..=7 {
            let mut out = Vec::new();
            let read = reader.get_read(start).map(|mut r| r.read_to_end(&mut out));
            assert!(matches!(read, Ok(Ok(_))), "{start}");
            assert_eq!(out, &b"abcdefg"[start as usize..]);
        }
        assert!(reader.get_read(8).is_err());
        assert_eq!(
            reader.get_bytes(2, 3).ok(),
            Some(Bytes::from_static(b"cde"))
        );
        assert!(reader.get_bytes(5, 3).is_err());
    }
}
