//! Reading the small files flags name (certificates, keys, token lists).

/// The most a file named by a flag (a certificate, a key, a token list) may hold: such files are
/// a few KiB.
pub const SMALL_FILE_LIMIT: u64 = 1 << 20;

/// Reads a file named by a flag: a regular file of at most [`SMALL_FILE_LIMIT`] bytes. A device
/// (`/dev/zero`), a pipe or an oversized file is refused at once instead of read until memory
/// runs out or forever.
///
/// # Errors
///
/// The operating system's, or [`std::io::ErrorKind::InvalidInput`] saying what is wrong with
/// the file.
pub fn read_small_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
    if !meta.is_file() {
        return Err(invalid(
            "not a regular file (a directory, a device or a pipe)".into(),
        ));
    }
    let mut bytes = Vec::new();
    file.take(SMALL_FILE_LIMIT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > SMALL_FILE_LIMIT {
        return Err(invalid(format!(
            "larger than {} KiB, which no certificate, key or token list is",
            SMALL_FILE_LIMIT >> 10
        )));
    }
    Ok(bytes)
}
