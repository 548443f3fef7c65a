//! Symmetric cryptography of oct-HSM keys: AES key wrap and AES-GCM. Imports nothing of the crate.

/// AES key wrap (RFC 3394), or with padding (RFC 5649): wrap when `wrap`, else unwrap.
pub(crate) fn key_wrap(key: &[u8], data: &[u8], wrap: bool, pad: bool) -> Result<Vec<u8>, String> {
    use aes_kw::{KekAes128, KekAes192, KekAes256};
    macro_rules! run {
        ($t:ty, $n:expr) => {{
            let mut a = [0u8; $n];
            a.copy_from_slice(key);
            let kek = <$t>::from(a);
            match (wrap, pad) {
                (true, false) => kek.wrap_vec(data),
                (false, false) => kek.unwrap_vec(data),
                (true, true) => kek.wrap_with_padding_vec(data),
                (false, true) => kek.unwrap_with_padding_vec(data),
            }
        }};
    }
    if !pad && (!data.len().is_multiple_of(8) || data.len() < if wrap { 16 } else { 24 }) {
        return Err(format!("Invalid value length {} for AES key wrap.", data.len()));
    }
    let r = match key.len() {
        16 => run!(KekAes128, 16),
        24 => run!(KekAes192, 24),
        32 => run!(KekAes256, 32),
        _ => return Err("Invalid key length.".into()),
    };
    r.map_err(|_| if wrap { "Wrap failed.".to_string() } else { "Unwrap failed: integrity check failed.".to_string() })
}

/// AES-GCM: encrypt when `tag` is `None` (returns ciphertext and tag), else decrypt and check `tag`.
pub(crate) fn gcm(
    key: &[u8],
    iv: &[u8],
    aad: &[u8],
    data: &[u8],
    tag: Option<&[u8]>,
) -> Result<(Vec<u8>, Vec<u8>), String> {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce, Tag};
    type Aes192Gcm = AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>;
    let nonce = Nonce::from_slice(iv);
    let mut buf = data.to_vec();
    macro_rules! run {
        ($t:ty) => {{
            let c = <$t>::new_from_slice(key).map_err(|_| "Invalid key length.".to_string())?;
            match tag {
                None => {
                    let t = c
                        .encrypt_in_place_detached(nonce, aad, &mut buf)
                        .map_err(|_| "Encryption failed.".to_string())?;
                    Ok((buf, t.to_vec()))
                }
                Some(t) => {
                    c.decrypt_in_place_detached(nonce, aad, &mut buf, Tag::from_slice(t))
                        .map_err(|_| "Decryption failed: authentication tag mismatch.".to_string())?;
                    Ok((buf, vec![]))
                }
            }
        }};
    }
    match key.len() {
        16 => run!(Aes128Gcm),
        24 => run!(Aes192Gcm),
        32 => run!(Aes256Gcm),
        _ => Err("Invalid key length.".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util;

    #[test]
    fn rfc3394_vector() {
        // RFC 3394 section 4.6: 256-bit KEK wrapping 256 bits of key data.
        let kek: Vec<u8> = (0u8..32).collect();
        let data = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF, 0x00, 0x01,
            0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F,
        ];
        let wrapped = key_wrap(&kek, &data, true, false).unwrap();
        assert_eq!(
            util::hex(&wrapped),
            "28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21"
        );
        assert_eq!(key_wrap(&kek, &wrapped, false, false).unwrap(), data);
    }

    #[test]
    fn gcm_round_trip() {
        let k = util::random_bytes(32);
        let iv = util::random_bytes(12);
        let (ct, tag) = gcm(&k, &iv, b"a", b"hello", None).unwrap();
        assert_eq!(gcm(&k, &iv, b"a", &ct, Some(&tag)).unwrap().0, b"hello");
        assert!(gcm(&k, &iv, b"b", &ct, Some(&tag)).is_err());
    }
}
