//! Small helpers, at the bottom: the one lock helper, time, encodings, identifiers, randomness.
//! Imports nothing of the crate.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lock, recovering from poisoning: a panicked request must not take the sandbox down with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Seconds since the Unix epoch (wall clock, without the sandbox clock offset).
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Fill a buffer with OS randomness.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    // getrandom only fails when the OS has no entropy source at all.
    if getrandom::fill(&mut v).is_err() {
        let seed = unix_now() as u64 ^ 0x9e37_79b9_7f4a_7c15;
        for (i, b) in v.iter_mut().enumerate() {
            *b = (seed.rotate_left(i as u32 % 64) >> 3) as u8;
        }
    }
    v
}

/// A uniformly distributed number in `[0, 1)`.
pub fn random_unit() -> f64 {
    let b = random_bytes(8);
    let mut a = [0u8; 8];
    a.copy_from_slice(&b);
    (u64::from_le_bytes(a) >> 11) as f64 / (1u64 << 53) as f64
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// A random version-4 UUID in its canonical lower-case form.
pub fn uuid_v4() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// Seconds in an ISO 8601 duration of whole numbers (`P90D`, `P1Y2M`, `PT48H`, `P1W`), with a
/// year as 365 days and a month as 30 (how long a rotation policy waits needs no calendar here).
pub fn iso8601_duration_secs(text: &str) -> Option<i64> {
    let rest = text.strip_prefix('P')?;
    let (date, time) = rest.split_once('T').unwrap_or((rest, ""));
    let mut total: i64 = 0;
    let mut any = false;
    for (part, units) in [
        (date, &[('Y', 365 * 86_400), ('M', 30 * 86_400), ('W', 7 * 86_400), ('D', 86_400)][..]),
        (time, &[('H', 3600), ('M', 60), ('S', 1)][..]),
    ] {
        let mut number = String::new();
        let mut allowed = units.iter();
        for c in part.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            // Units in their order, each at most once, each after a number.
            let (_, secs) = allowed.by_ref().find(|(u, _)| *u == c)?;
            let n: i64 = std::mem::take(&mut number).parse().ok()?;
            total = total.checked_add(n.checked_mul(*secs)?)?;
            any = true;
        }
        if !number.is_empty() {
            return None;
        }
    }
    any.then_some(total)
}

/// A Key Vault style key version: 32 lower-case hex characters.
pub fn key_version() -> String {
    hex(&random_bytes(16))
}

/// True when `s` is a canonical 8-4-4-4-12 hex GUID (any case).
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 36 {
        return false;
    }
    b.iter().enumerate().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    })
}

/// base64url without padding.
pub fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// Decode base64url, tolerating padding and the standard alphabet (as Key Vault does).
pub fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    let t = s.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(t)
        .ok()
        .or_else(|| STANDARD.decode(s).ok())
        .or_else(|| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t).ok())
}

/// Format Unix seconds as RFC 3339 UTC (`2024-01-02T03:04:05Z`).
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", y, m, d, rem / 3600, (rem / 60) % 60, rem % 60)
}

/// Format Unix seconds as RFC 3339 UTC with 7 fractional digits (Entra style timestamps).
pub fn rfc3339_fraction(secs: i64) -> String {
    let s = rfc3339(secs);
    format!("{}.0000000Z", s.trim_end_matches('Z'))
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Parse an `application/x-www-form-urlencoded` string or URL query into pairs.
pub fn parse_form(s: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(s.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Percent-decode a URL path segment.
pub fn pct_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let h = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = h {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The base58 alphabet used by Antimatter domain IDs.
pub const BASE58: &str = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

/// True for `dm-` followed by 11 base58 characters.
pub fn is_domain_id(s: &str) -> bool {
    s.len() == 14 && s.starts_with("dm-") && s[3..].chars().all(|c| BASE58.contains(c))
}

/// A cell name: a DNS label of lower-case letters, digits and `-`, at most 32 long.
pub fn is_cell_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn guid_and_versions() {
        let u = uuid_v4();
        assert!(is_guid(&u));
        assert_eq!(key_version().len(), 32);
        assert!(is_domain_id("dm-9kD3xPqR7tZ"));
        assert!(!is_domain_id("dm-0kD3xPqR7tZ"));
    }

    #[test]
    fn iso8601_durations() {
        assert_eq!(iso8601_duration_secs("P90D"), Some(90 * 86_400));
        assert_eq!(iso8601_duration_secs("P1Y10D"), Some(375 * 86_400));
        assert_eq!(iso8601_duration_secs("PT48H"), Some(48 * 3600));
        assert_eq!(iso8601_duration_secs("P1M"), Some(30 * 86_400), "M before T is months");
        assert_eq!(iso8601_duration_secs("PT1M"), Some(60), "M after T is minutes");
        for bad in ["", "P", "90D", "P90", "PD", "P1D1Y", "P1.5D", "P-1D"] {
            assert_eq!(iso8601_duration_secs(bad), None, "{bad}");
        }
    }

    #[test]
    fn pct() {
        assert_eq!(pct_decode("a%20b"), "a b");
        assert_eq!(pct_decode("%"), "%");
        assert_eq!(pct_decode("ab%4"), "ab%4");
    }
}
