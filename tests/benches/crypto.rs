//! Each pure-Rust primitive the product uses, next to OpenSSL's, measured in the same run:
//! SHA-256, SHA-384 and AES-128-XTS in GB/s; P-384 ECDSA sign, verify and ECDH per second;
//! RSA-4096 PSS signing per second and key generation (median of several).
//!
//! `cargo bench -p tests --bench crypto`.

use std::time::{Duration, Instant};

use sevd::crypto::ca::{PssHash, RsaKeyPair};
use sevd::crypto::ecc::EcKeyPair;
use sevd::memctl::{GuestAddress, MemoryController, Vek};
use uapi::cert::{algo, usage};

const MIB: usize = 1 << 20;

/// Runs `f` repeatedly for about `budget` and returns calls per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    let mut n = 0u64;
    while t.elapsed() < budget {
        f();
        n += 1;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn line(what: &str, unit: &str, ours: f64, theirs: f64) {
    println!(
        "{what:<28} ours {ours:>10.2} {unit:<6} OpenSSL {theirs:>10.2} {unit:<6} ratio {:.2}",
        ours / theirs
    );
}

fn main() {
    let data = vec![0x5au8; 64 * MIB];
    let gbps = |secs_per_call: f64| data.len() as f64 / secs_per_call / 1e9;
    let budget = Duration::from_millis(1500);

    // Hashes over 64 MiB.
    let ours = rate(budget, || {
        std::hint::black_box(sevd::crypto::sha256(&data));
    });
    let theirs = rate(budget, || {
        std::hint::black_box(openssl::sha::sha256(&data));
    });
    line("SHA-256", "GB/s", gbps(1.0 / ours), gbps(1.0 / theirs));
    let ours = rate(budget, || {
        use sha2::Digest;
        std::hint::black_box(sha2::Sha384::digest(&data));
    });
    let theirs = rate(budget, || {
        std::hint::black_box(openssl::sha::sha384(&data));
    });
    line("SHA-384", "GB/s", gbps(1.0 / ours), gbps(1.0 / theirs));

    // AES-128-XTS: ours with one-block data units (the memory controller's construction),
    // OpenSSL's with 4 KiB units (its fastest form).
    let mut mc = MemoryController::new();
    mc.install(1, Vek::generate().unwrap());
    let mut buf = data.clone();
    let ours = rate(budget, || mc.encrypt(1, GuestAddress(0), &mut buf).unwrap());
    let key = [0x11u8; 32];
    let mut key2 = key;
    key2[16] ^= 1;
    let mut out = vec![0u8; 4096 + 16];
    let theirs = rate(budget, || {
        use openssl::symm::{Cipher, Crypter, Mode};
        for (i, unit) in data.chunks(4096).enumerate() {
            let mut iv = [0u8; 16];
            iv[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let mut c =
                Crypter::new(Cipher::aes_128_xts(), Mode::Encrypt, &key2, Some(&iv)).unwrap();
            c.update(unit, &mut out).unwrap();
        }
    });
    line("AES-128-XTS", "GB/s", gbps(1.0 / ours), gbps(1.0 / theirs));

    // P-384: sign and verify a certificate body (SHA-256, as SEV's certificates), ECDH.
    let key = EcKeyPair::generate().unwrap();
    let mut cert = key
        .certificate((1, 55), usage::PEK, algo::ECDSA_SHA256)
        .unwrap();
    let body = cert.body();
    let ossl = openssl::ec::EcKey::private_key_from_der(&key.to_der().unwrap()).unwrap();
    let digest = sevd::crypto::sha256(&body);
    let ours = rate(budget, || {
        cert.sigs[0] = uapi::cert::Signature::empty();
        key.sign_certificate(&mut cert, usage::OCA, algo::ECDSA_SHA256)
            .unwrap();
    });
    let theirs = rate(budget, || {
        std::hint::black_box(openssl::ecdsa::EcdsaSig::sign(&digest, &ossl).unwrap());
    });
    line("P-384 ECDSA sign", "/s", ours, theirs);
    let public = key.public().unwrap();
    let sig = cert.sigs[0].sig;
    let made = openssl::ecdsa::EcdsaSig::sign(&digest, &ossl).unwrap();
    let ours = rate(budget, || {
        assert!(public.verify(algo::ECDSA_SHA256, &body, &sig));
    });
    let theirs = rate(budget, || {
        assert!(made.verify(&digest, &ossl).unwrap());
    });
    line("P-384 ECDSA verify", "/s", ours, theirs);
    let peer = EcKeyPair::generate().unwrap();
    let peer_public = peer.public().unwrap();
    let ours = rate(budget, || {
        std::hint::black_box(key.ecdh(&peer_public).unwrap());
    });
    let a = openssl::pkey::PKey::from_ec_key(ossl.clone()).unwrap();
    let b = openssl::pkey::PKey::from_ec_key(
        openssl::ec::EcKey::private_key_from_der(&peer.to_der().unwrap()).unwrap(),
    )
    .unwrap();
    let theirs = rate(budget, || {
        let mut d = openssl::derive::Deriver::new(&a).unwrap();
        d.set_peer(&b).unwrap();
        std::hint::black_box(d.derive_to_vec().unwrap());
    });
    line("P-384 ECDH", "/s", ours, theirs);

    // RSA-4096: PSS signing (SHA-384, as the ASK signs the CEK) and key generation.
    let rsa = RsaKeyPair::generate(4096).unwrap();
    let ours = rate(budget, || {
        std::hint::black_box(rsa.sign_pss(PssHash::Sha384, &body).unwrap());
    });
    let ossl_rsa =
        openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(4096).unwrap()).unwrap();
    let theirs = rate(budget, || {
        use openssl::hash::MessageDigest;
        use openssl::rsa::Padding;
        use openssl::sign::{RsaPssSaltlen, Signer};
        let mut s = Signer::new(MessageDigest::sha384(), &ossl_rsa).unwrap();
        s.set_rsa_padding(Padding::PKCS1_PSS).unwrap();
        s.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH).unwrap();
        s.set_rsa_mgf1_md(MessageDigest::sha384()).unwrap();
        std::hint::black_box(s.sign_oneshot_to_vec(&body).unwrap());
    });
    line("RSA-4096 PSS sign", "/s", ours, theirs);
    let time = |f: &dyn Fn()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    let ours = median(
        (0..5)
            .map(|_| time(&|| drop(RsaKeyPair::generate(4096).unwrap())))
            .collect(),
    );
    let theirs = median(
        (0..5)
            .map(|_| time(&|| drop(openssl::rsa::Rsa::generate(4096).unwrap())))
            .collect(),
    );
    println!(
        "{:<28} ours {ours:>10.2} s      OpenSSL {theirs:>10.2} s      ratio {:.2} (median of 5)",
        "RSA-4096 key generation",
        ours / theirs
    );
}
