//! Lower-case hexadecimal, written without a formatter call per byte: request ids, trace and
//! span ids, webhook signatures.

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Both digits of every byte: one load per byte rather than two shifts, two loads and their
/// bounds checks.
static PAIRS: [[u8; 2]; 256] = {
    let mut pairs = [[0u8; 2]; 256];
    let mut b = 0;
    while b < 256 {
        pairs[b] = [DIGITS[b >> 4], DIGITS[b & 0xf]];
        b += 1;
    }
    pairs
};

/// Appends `bytes` to `out` as lower-case hex.
pub fn push(out: &mut String, bytes: &[u8]) {
    // Digits are written into a sized buffer, not pushed one `char` at a time (a capacity
    // check each).
    let mut digits = [0u8; 64];
    for chunk in bytes.chunks(digits.len() / 2) {
        let written = &mut digits[..chunk.len() * 2];
        write_digits(written, chunk);
        out.push_str(std::str::from_utf8(written).unwrap_or_default());
    }
}

/// `bytes` as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = vec![0u8; bytes.len() * 2];
    write_digits(&mut out, bytes);
    String::from_utf8(out).unwrap_or_default()
}

/// Fills `out` (two bytes per byte of `bytes`) with the digits: request ids are written into a
/// buffer of their own.
pub fn write_digits(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.as_chunks_mut::<2>().0.iter_mut().zip(bytes) {
        *pair = PAIRS[usize::from(*b)];
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_become_two_lower_case_digits_each() {
        assert_eq!(super::encode(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::encode(&[]), "");
        let long: Vec<u8> = (0..=255).collect();
        let mut pushed = String::from("x");
        super::push(&mut pushed, &long);
        assert_eq!(pushed.len(), 1 + 512);
        assert_eq!(
            pushed.strip_prefix('x'),
            Some(super::encode(&long).as_str())
        );
        assert!(pushed.ends_with("fdfeff"));
    }
}
