//! Garbage from clients: each call gets the kernel's errno or the firmware's status, the
//! daemon keeps serving, and the stored state is unchanged.

use std::fs::File;

use tests::{pdh_export, platform_status, require_mount, sev_issue, Rng, Sevd};
use uapi::psp_sev::*;
use uapi::ByteValued;

fn state_files(sevd: &Sevd) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(&sevd.state_dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn assert_serving(f: &File) {
    assert_eq!(platform_status(f).unwrap().state, 1);
}

#[test]
fn random_commands_and_pointers_on_a_read_only_file() {
    require_mount!();
    let sevd = Sevd::start();
    let before = state_files(&sevd);
    let ro = sevd.open_ro();
    let mut scratch = vec![0u8; 0x8000];
    let base = scratch.as_mut_ptr() as u64;
    let mut rng = Rng(0x5eed_5eed_5eed_5eed);
    for i in 0..3000 {
        let cmd = match i % 3 {
            0 => (rng.next_u64() % 16) as u32,
            1 => rng.next_u64() as u32,
            _ => (rng.next_u64() % 13) as u32,
        };
        let data = match rng.next_u64() % 4 {
            0 => 0,
            1 => rng.next_u64(),
            2 => base + rng.next_u64() % 0x7000,
            _ => 0x1000,
        };
        // Fill the scratch area with garbage structs (lengths, addresses) now and then.
        if i % 7 == 0 {
            for chunk in scratch.chunks_mut(8).take(64) {
                chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
            }
        }
        let (r, _) = sev_issue(&ro, cmd, data, 0);
        if let Err(errno) = r {
            assert!(
                [
                    libc::EINVAL,
                    libc::EFAULT,
                    libc::EPERM,
                    libc::EIO,
                    libc::ENOMEM
                ]
                .contains(&errno),
                "cmd {cmd} data {data:#x}: unexpected errno {errno}"
            );
        }
    }
    assert_serving(&ro);
    assert_eq!(
        state_files(&sevd),
        before,
        "read-only garbage changed the stored state"
    );
}

#[test]
fn malformed_state_changing_commands_change_nothing() {
    require_mount!();
    let sevd = Sevd::start();
    let f = sevd.open();
    let chain_before = pdh_export(&f).unwrap();
    let before = state_files(&sevd);

    // Lengths of 0 and of 4 GiB.
    let mut buf = vec![0u8; 0x824];
    for len in [0u32, u32::MAX, 0x4001] {
        let mut csr = SevUserDataPekCsr {
            address: buf.as_mut_ptr() as u64,
            length: len,
        };
        let (r, error) = sev_issue(&f, SevCmd::PekCsr as u32, &mut csr as *mut _ as u64, 0);
        assert!(
            r == Err(libc::EFAULT) || (r == Err(libc::EIO) && error == 4),
            "PEK_CSR len {len}: {r:?}"
        );
        let mut pdh = SevUserDataPdhCertExport {
            pdh_cert_address: buf.as_mut_ptr() as u64,
            pdh_cert_len: len,
            cert_chain_address: buf.as_mut_ptr() as u64,
            cert_chain_len: len,
        };
        let (r, _) = sev_issue(
            &f,
            SevCmd::PdhCertExport as u32,
            &mut pdh as *mut _ as u64,
            0,
        );
        assert!(
            matches!(r, Err(libc::EFAULT) | Err(libc::EIO)),
            "PDH len {len}: {r:?}"
        );
        let mut id = SevUserDataGetId2 {
            address: buf.as_mut_ptr() as u64,
            length: len,
        };
        let (r, _) = sev_issue(&f, SevCmd::GetId2 as u32, &mut id as *mut _ as u64, 0);
        assert!(
            matches!(r, Err(libc::ENOMEM) | Err(libc::EIO) | Ok(())),
            "GET_ID2 len {len}: {r:?}"
        );
    }

    // Truncated and forged certificates for PEK_CERT_IMPORT.
    let mut csr = vec![0u8; 0x824];
    let mut arg = SevUserDataPekCsr {
        address: csr.as_mut_ptr() as u64,
        length: 0x824,
    };
    assert_eq!(
        sev_issue(&f, SevCmd::PekCsr as u32, &mut arg as *mut _ as u64, 0).0,
        Ok(())
    );
    let oca = &chain_before.1[0x824..2 * 0x824]; // the platform's own OCA: self-signed, valid
    let import = |pek: &[u8], oca: &[u8]| {
        let mut arg = SevUserDataPekCertImport {
            pek_cert_address: pek.as_ptr() as u64,
            pek_cert_len: pek.len() as u32,
            oca_cert_address: oca.as_ptr() as u64,
            oca_cert_len: oca.len() as u32,
        };
        sev_issue(
            &f,
            SevCmd::PekCertImport as u32,
            arg.as_bytes_mut().as_mut_ptr() as u64,
            0,
        )
    };
    assert_eq!(
        import(&csr[..100], oca),
        (Err(libc::EIO), 4),
        "truncated PEK: INVALID_LENGTH"
    );
    assert_eq!(
        import(&csr, &oca[..0x823]),
        (Err(libc::EIO), 4),
        "truncated OCA"
    );
    assert_eq!(
        import(&csr, oca),
        (Err(libc::EIO), 0x06),
        "unsigned PEK: INVALID_CERTIFICATE"
    );
    let mut forged = chain_before.1[..0x824].to_vec(); // the PEK, signed by the OCA
    forged[0x41C + 5] ^= 1;
    assert_eq!(
        import(&forged, oca),
        (Err(libc::EIO), 0x0A),
        "forged signature: BAD_SIGNATURE"
    );
    let mut bad_oca = oca.to_vec();
    bad_oca[0x14] ^= 1; // the OCA's key no longer matches its self-signature
    assert!(matches!(
        import(&chain_before.1[..0x824], &bad_oca),
        (Err(libc::EIO), 0x06) | (Err(libc::EIO), 0x0A)
    ));
    assert_eq!(import(&csr, &[]).0, Err(libc::EINVAL));
    // Unmapped blob pointers.
    let mut arg = SevUserDataPekCertImport {
        pek_cert_address: 0x1000,
        pek_cert_len: 0x824,
        oca_cert_address: 0x2000,
        oca_cert_len: 0x824,
    };
    assert_eq!(
        sev_issue(
            &f,
            SevCmd::PekCertImport as u32,
            arg.as_bytes_mut().as_mut_ptr() as u64,
            0
        )
        .0,
        Err(libc::EFAULT)
    );

    assert_serving(&f);
    assert_eq!(pdh_export(&f).unwrap(), chain_before);
    assert_eq!(
        state_files(&sevd),
        before,
        "a refused command changed the stored state"
    );
}
