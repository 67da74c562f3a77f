use super::*;
use openssl::symm::{Cipher, Crypter, Mode};

fn controller(asid: u32) -> (MemoryController, Vek) {
    let mut mc = MemoryController::new();
    let vek = Vek::generate().unwrap();
    mc.install(asid, vek.clone());
    (mc, vek)
}

#[test]
fn one_block_matches_openssl_xts_with_the_address_as_tweak() {
    let (mc, vek) = controller(1);
    let gpa = 0x1234_5670u64;
    let mut block = *b"sixteen byte blk";
    mc.encrypt(1, GuestAddress(gpa), &mut block).unwrap();
    // OpenSSL's AES-128-XTS on a one-block data unit whose IV (tweak) is the address.
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&gpa.to_le_bytes());
    let mut c = Crypter::new(Cipher::aes_128_xts(), Mode::Encrypt, &*vek.0, Some(&iv)).unwrap();
    let mut out = [0u8; 32];
    let n = c.update(b"sixteen byte blk", &mut out).unwrap();
    assert_eq!(&out[..n], &block);
}

#[test]
fn equal_plaintext_at_two_addresses_differs_and_round_trips() {
    let (mc, _) = controller(3);
    let plain = [0x42u8; 64];
    let (mut a, mut b) = (plain, plain);
    mc.encrypt(3, GuestAddress(0x1000), &mut a).unwrap();
    mc.encrypt(3, GuestAddress(0x2000), &mut b).unwrap();
    assert_ne!(a, b);
    assert_ne!(a[..16], a[16..32], "each block has its own tweak");
    mc.decrypt(3, GuestAddress(0x1000), &mut a).unwrap();
    assert_eq!(a, plain);
    assert!(mc.encrypt(3, GuestAddress(0x1001), &mut b).is_err());
    assert!(
        mc.encrypt(4, GuestAddress(0x1000), &mut b).is_err(),
        "no key for ASID 4"
    );
}

#[test]
fn keys_are_per_asid_and_cleared() {
    let mut mc = MemoryController::new();
    mc.install(1, Vek::generate().unwrap());
    mc.install(2, Vek::generate().unwrap());
    let (mut a, mut b) = ([7u8; 16], [7u8; 16]);
    mc.encrypt(1, GuestAddress(0), &mut a).unwrap();
    mc.encrypt(2, GuestAddress(0), &mut b).unwrap();
    assert_ne!(a, b);
    mc.clear(1);
    assert!(!mc.has_key(1));
    assert!(matches!(
        mc.decrypt(1, GuestAddress(0), &mut a),
        Err(MemctlError::NoKey(1))
    ));
}

#[test]
fn encrypt_range_crosses_regions_and_hides_plaintext() {
    let (mc, _) = controller(1);
    let mem = VecGuestMemory::new();
    mem.add_region(GuestAddress(0), 0x1000);
    mem.add_region(GuestAddress(0x1000), 0x1000);
    let plain: Vec<u8> = (0..0x2000u32).map(|i| (i % 251) as u8).collect();
    mem.write(GuestAddress(0), &plain).unwrap();
    let mut seen = vec![];
    mc.encrypt_range(1, &mem, GuestAddress(0x800), 0x1000, &mut |c: &[u8]| {
        seen.extend_from_slice(c)
    })
    .unwrap();
    assert_eq!(seen, plain[0x800..0x1800], "inspect sees the plaintext");
    let mut host = vec![0u8; 0x2000];
    mem.read(GuestAddress(0), &mut host).unwrap();
    assert_eq!(
        host[..0x800],
        plain[..0x800],
        "outside the range: untouched"
    );
    assert_ne!(
        host[0x800..0x1800],
        plain[0x800..0x1800],
        "the host sees ciphertext"
    );
    let mut guest = vec![0u8; 0x1000];
    mc.guest_read(1, &mem, GuestAddress(0x800), &mut guest)
        .unwrap();
    assert_eq!(guest, plain[0x800..0x1800], "the guest sees plaintext");
    // Unaligned guest accesses work and keep their neighbours.
    mc.guest_write(1, &mem, GuestAddress(0x803), b"hello")
        .unwrap();
    let mut g = [0u8; 9];
    mc.guest_read(1, &mem, GuestAddress(0x801), &mut g).unwrap();
    assert_eq!(
        &g,
        &[
            plain[0x801],
            plain[0x802],
            b'h',
            b'e',
            b'l',
            b'l',
            b'o',
            plain[0x808],
            plain[0x809]
        ]
    );
    // Outside guest memory: an error, nothing written.
    assert!(mc
        .encrypt_range(1, &mem, GuestAddress(0x1800), 0x1000, &mut |_: &[u8]| {})
        .is_err());
    let mut after = vec![0u8; 0x800];
    mem.read(GuestAddress(0x1800), &mut after).unwrap();
    assert_eq!(after, plain[0x1800..]);
}

#[test]
fn long_ranges_are_hashed_in_order_on_the_side() {
    let (mc, _) = controller(1);
    let mem = VecGuestMemory::new();
    let len = 3 * CHUNK + 4096;
    mem.add_region(GuestAddress(0), len);
    let plain: Vec<u8> = (0..len).map(|i| (i * 13 % 256) as u8).collect();
    mem.write(GuestAddress(0), &plain).unwrap();
    let mut sha = openssl::sha::Sha256::new();
    mc.encrypt_range(1, &mem, GuestAddress(0), len as u64, &mut |c: &[u8]| {
        sha.update(c)
    })
    .unwrap();
    assert_eq!(sha.finish(), crate::crypto::sha256(&plain));
    let mut guest = vec![0u8; len];
    mc.guest_read(1, &mem, GuestAddress(0), &mut guest).unwrap();
    assert_eq!(guest, plain);
}

/// Guest memory reached only by copying, as the VMM's is.
struct CopyOnly(VecGuestMemory);

impl GuestMemory for CopyOnly {
    fn read(&self, gpa: GuestAddress, buf: &mut [u8]) -> Result<(), GuestMemoryError> {
        self.0.read(gpa, buf)
    }
    fn write(&self, gpa: GuestAddress, data: &[u8]) -> Result<(), GuestMemoryError> {
        self.0.write(gpa, data)
    }
    fn check_range(&self, gpa: GuestAddress, len: u64) -> Result<(), GuestMemoryError> {
        self.0.check_range(gpa, len)
    }
}

#[test]
fn in_place_and_copied_memory_encrypt_and_hash_alike() {
    let (mc, _) = controller(1);
    for len in [0x1000, CHUNK, CHUNK + 16, 5 * CHUNK + 0x30] {
        let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
        let gpa = GuestAddress(0x4000);
        let direct = VecGuestMemory::from_region(gpa, plain.clone());
        let copied = CopyOnly(VecGuestMemory::from_region(gpa, plain.clone()));
        let (mut a, mut b) = (vec![], vec![]);
        mc.encrypt_range(1, &direct, gpa, len as u64, &mut |c: &[u8]| {
            a.push(c.to_vec())
        })
        .unwrap();
        mc.encrypt_range(1, &copied, gpa, len as u64, &mut |c: &[u8]| {
            b.push(c.to_vec())
        })
        .unwrap();
        assert_eq!(a.concat(), plain, "{len:#x}: the plaintext, in order");
        assert_eq!(a, b, "{len:#x}: the same pieces inspected");
        assert_eq!(
            direct.into_first_region(),
            copied.0.into_first_region(),
            "{len:#x}: the same ciphertext"
        );
    }
}

/// One block as `xts-mode` computes it: a one-block sector whose tweak is the address.
fn xts_mode_block(key: &[u8; 32], gpa: u64, block: &mut [u8]) {
    use aes::cipher::KeyInit;
    let k1 = aes::Aes128::new_from_slice(&key[..16]).unwrap();
    let k2 = aes::Aes128::new_from_slice(&key[16..]).unwrap();
    xts_mode::Xts128::new(k1, k2).encrypt_sector(block, (gpa as u128).to_le_bytes());
}

/// One block as OpenSSL's `aes-128-xts` computes it.
fn openssl_block(key: &[u8; 32], gpa: u64, block: &[u8]) -> Vec<u8> {
    let mut iv = [0u8; 16];
    iv[..8].copy_from_slice(&gpa.to_le_bytes());
    let mut c = Crypter::new(Cipher::aes_128_xts(), Mode::Encrypt, key, Some(&iv)).unwrap();
    let mut out = [0u8; 32];
    let n = c.update(block, &mut out).unwrap();
    out[..n].to_vec()
}

#[test]
fn the_parallel_construction_equals_xts_mode_and_openssl_block_for_block() {
    for round in 0..40 {
        let key: [u8; 32] = crate::crypto::random_bytes().unwrap();
        let r: [u8; 8] = crate::crypto::random_bytes().unwrap();
        let gpa = u64::from_le_bytes(r) & 0x000f_ffff_ffff_fff0;
        let blocks = 1 + (u16::from_le_bytes([r[0], r[1]]) as usize % 700);
        let plain: Vec<u8> = (0..blocks * 16).map(|i| (i * 31 + round) as u8).collect();
        let mut ours = plain.clone();
        xts::apply(&key, gpa, &mut ours, true).unwrap();
        for (i, (p, c)) in plain.chunks(16).zip(ours.chunks(16)).enumerate() {
            let at = gpa + 16 * i as u64;
            let mut theirs = p.to_vec();
            xts_mode_block(&key, at, &mut theirs);
            assert_eq!(c, &theirs[..], "xts-mode, block {i} at {at:#x}");
            if i % 97 == 0 {
                assert_eq!(c, &openssl_block(&key, at, p)[..], "OpenSSL, block {i}");
            }
        }
        xts::apply(&key, gpa, &mut ours, false).unwrap();
        assert_eq!(ours, plain, "decrypts back");
    }
}
