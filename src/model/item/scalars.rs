//! Scalars: binary values (strict base64, copied as they came) and numbers (normalised the way
//! DynamoDB stores them).

use super::*;

/// Writes a binary value's base64 text, which must decode. The decoder is strict (standard
/// alphabet, canonical padding, no stray bits in the last character), and under those rules a
/// byte string has exactly one encoding: text it accepts is already canonical, so it is copied
/// as it came rather than decoded and encoded again.
pub(super) fn write_binary(text: &str, buf: &mut Vec<u8>, out: &mut Vec<u8>) -> Result<(), String> {
    buf.clear();
    BASE64
        .decode_vec(text, buf)
        .map_err(|e| format!("binary value is not valid base64 ({e})"))?;
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

/// Normalises a DynamoDB number to the form DynamoDB stores: no exponent, no leading zeros, no
/// trailing fractional zeros, no `+`, `0` for every zero. Rejects text that is not a decimal
/// number, more than 38 significant digits, or a magnitude outside 1E-130..1E+126.
pub fn normalize_number(text: &str) -> Result<String, String> {
    let mut out = Vec::with_capacity(text.len() + 2);
    write_number(text, &mut out)?;
    String::from_utf8(out).map_err(|_| format!("{text:?} is not a decimal number"))
}

/// True when `text` is already in normalised form and within DynamoDB's limits (the common case:
/// DynamoDB sends numbers normalised), so it can be copied as is.
pub(super) fn is_normalized(text: &[u8]) -> bool {
    // One pass over the digits: most numbers in an item are short integers and decimals
    // already in this form, and every one of them is checked.
    let body = match text {
        [b'-', rest @ ..] => rest,
        _ => text,
    };
    let int_len = body
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(body.len());
    let (int, rest) = body.split_at(int_len);
    let zero = int == b"0";
    match int.first() {
        None => return false,
        Some(b'0') if !zero => return false, // a leading zero
        Some(_) => {}
    }
    match rest {
        // An integer: its digits are all significant; zero has no sign.
        [] if zero => text == b"0",
        [] => int_len <= MAX_SIGNIFICANT_DIGITS && int_len as i64 - 1 <= MAX_EXPONENT,
        // A fraction: digits, the last not a zero.
        [b'.', frac @ ..] => {
            if frac.last().is_none_or(|&b| b == b'0') || !frac.iter().all(u8::is_ascii_digit) {
                return false;
            }
            if zero {
                // 0.000ddd: the exponent of the first significant digit.
                let zeros = frac.iter().take_while(|&&b| b == b'0').count();
                let exponent = -(zeros as i64) - 1;
                frac.len() - zeros <= MAX_SIGNIFICANT_DIGITS && exponent >= MIN_EXPONENT
            } else {
                int_len + frac.len() <= MAX_SIGNIFICANT_DIGITS && int_len as i64 - 1 <= MAX_EXPONENT
            }
        }
        _ => false,
    }
}

pub(super) fn write_number(text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    if is_normalized(text.as_bytes()) {
        out.extend_from_slice(text.as_bytes());
        return Ok(());
    }
    let bad = || format!("{text:?} is not a decimal number");
    let bytes = text.as_bytes();
    let (negative, rest) = match bytes.first() {
        Some(b'-') => (true, &bytes[1..]),
        Some(b'+') => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    let (mantissa, exponent) = match rest.iter().position(|&b| b == b'e' || b == b'E') {
        Some(i) => {
            let exp_text = std::str::from_utf8(&rest[i + 1..]).map_err(|_| bad())?;
            let exp_digits = exp_text.trim_start_matches(['+', '-']);
            if exp_digits.is_empty()
                || !exp_digits.bytes().all(|b| b.is_ascii_digit())
                || exp_text.len() - exp_digits.len() > 1
                || exp_digits.len() > 6
            {
                return Err(bad());
            }
            let exp: i64 = exp_text.parse().map_err(|_| bad())?;
            (&rest[..i], exp)
        }
        None => (rest, 0),
    };
    let (int_part, frac_part) = match mantissa.iter().position(|&b| b == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &mantissa[mantissa.len()..]),
    };
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part.iter().chain(frac_part).all(u8::is_ascii_digit)
    {
        return Err(bad());
    }
    // All digits as one run; the value is digits × 10^(exponent - frac_len).
    let digits: Vec<u8> = int_part.iter().chain(frac_part).copied().collect();
    let mut scale = exponent - frac_part.len() as i64;
    let Some(first) = digits.iter().position(|&d| d != b'0') else {
        out.push(b'0');
        return Ok(());
    };
    let mut last = digits.len();
    while digits[last - 1] == b'0' {
        last -= 1;
        scale += 1;
    }
    let significant = &digits[first..last];
    if significant.len() > MAX_SIGNIFICANT_DIGITS {
        return Err(format!(
            "{text:?} has {} significant digits; DynamoDB allows at most {MAX_SIGNIFICANT_DIGITS}",
            significant.len()
        ));
    }
    let leading = scale + significant.len() as i64 - 1;
    if !(MIN_EXPONENT..=MAX_EXPONENT).contains(&leading) {
        return Err(format!(
            "{text:?} is outside DynamoDB's number range (1E-130 to 9.99E+125)"
        ));
    }
    if negative {
        out.push(b'-');
    }
    if scale >= 0 {
        out.extend_from_slice(significant);
        out.extend(std::iter::repeat_n(b'0', scale as usize));
    } else {
        let point = significant.len() as i64 + scale;
        if point > 0 {
            out.extend_from_slice(&significant[..point as usize]);
            out.push(b'.');
            out.extend_from_slice(&significant[point as usize..]);
        } else {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-point) as usize));
            out.extend_from_slice(significant);
        }
    }
    Ok(())
}

/// Writes `s` as a JSON string with one fixed escaping: `"` `\` and control characters escaped,
/// everything else (including non-ASCII) as UTF-8.
pub(crate) fn write_json_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[(b >> 4) as usize],
                HEX[(b & 0xf) as usize],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}
