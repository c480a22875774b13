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

/// Fills `out` (two bytes per byte of `bytes`) with the digits.
fn write_digits(out: &mut [u8], bytes: &[u8]) {
    for (pair, b) in out.as_chunks_mut::<2>().0.iter_mut().zip(bytes) {
        *pair = PAIRS[usize::from(*b)];
    }
}

/// The 32 digits of `x`, most significant first, computed eight bytes at a time rather than
/// looked up per byte: a request id is one per request.
pub fn u128_digits(x: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&u64_digits((x >> 64) as u64));
    out[16..].copy_from_slice(&u64_digits(x as u64));
    out
}

/// The 16 digits of `x`, most significant first.
fn u64_digits(x: u64) -> [u8; 16] {
    const fn every_byte(b: u8) -> u128 {
        u128::from_ne_bytes([b; 16])
    }
    // Spread the nibbles apart until nibble `k` (from the least significant) is byte `k`.
    let mut v = u128::from(x);
    v = (v | (v << 32)) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    v = (v | (v << 16)) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    v = (v | (v << 4)) & every_byte(0x0f);
    // Each byte is now 0..=15: `0`..`9` are 0x30 above it, `a`..`f` another 0x27 (`'a' - 10 -
    // '0'`); a byte above 9 carries into its 0x10 bit when 6 is added.
    let above_nine = ((v + every_byte(0x06)) >> 4) & every_byte(0x01);
    (v + every_byte(0x30) + above_nine * 0x27).to_be_bytes()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_u128_is_its_big_endian_bytes_in_digits() {
        let mut values = vec![0, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210];
        values.extend((0..1000).map(|_| fastrand::u128(..)));
        values.extend((0..128).map(|bit| 1u128 << bit));
        for x in values {
            let digits = super::u128_digits(x);
            assert_eq!(
                std::str::from_utf8(&digits).unwrap(),
                super::encode(&x.to_be_bytes()),
                "{x:#x}"
            );
        }
    }

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
