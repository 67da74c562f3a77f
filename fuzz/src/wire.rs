//! The binary formats a caller or a file hands the project: SEV and AMD CA certificates,
//! the launch session, secret header, measurement and attestation report, OVMF's footer table, X.509 (VCEK, ASK,
//! ARK) in DER or PEM, and the sealed NV stores. Every decoder must refuse or accept without
//! panicking, and what it accepts must encode back to the same bytes.

use uapi::ca::{decode_ask_ark, CaCertificate};
use uapi::cert::{decode_chain, Certificate};
use uapi::launch::{AttestationReport, Measurement, SecretHeader, Session};

use sevd::certs::x509;
use sevd::firmware::migration::{open_packet, seal_packet, PACKET_HEADER_LEN};
use sevd::owner::ovmf::Ovmf;
use sevd::owner::session::TransportKeys;
use zeroize::Zeroizing;

use crate::chip::chip;

/// The first byte picks the format; the rest is its input.
pub fn uapi_wire(data: &[u8]) {
    let Some((&kind, input)) = data.split_first() else {
        return;
    };
    match kind % 11 {
        0 => {
            if let Ok(cert) = Certificate::decode(input) {
                assert_eq!(cert.encode(), input, "SEV certificate round trip");
                let _ = cert.ecc_pubkey();
            }
        }
        1 => {
            if let Ok(chain) = decode_chain(input, 3) {
                let encoded: Vec<u8> = chain.iter().flat_map(|c| c.encode()).collect();
                assert_eq!(encoded, input, "SEV chain round trip");
            }
        }
        2 => {
            if let Ok(cert) = CaCertificate::decode(input) {
                assert_eq!(cert.encode(), input, "AMD CA certificate round trip");
            }
        }
        3 => {
            if let Ok((ask, ark)) = decode_ask_ark(input) {
                assert_eq!([ask.encode(), ark.encode()].concat(), input, "ask_ark");
            }
        }
        4 => {
            if let Ok(s) = Session::decode(input) {
                assert_eq!(s.encode(), input, "session round trip");
            }
        }
        5 => {
            if let Ok(h) = SecretHeader::decode(input) {
                assert_eq!(h.encode(), input, "secret header round trip");
            }
        }
        6 => {
            if let Ok(m) = Measurement::decode(input) {
                assert_eq!(m.encode(), input, "measurement round trip");
            }
            if let Ok(r) = AttestationReport::decode(input) {
                assert_eq!(r.encode(), input, "attestation report round trip");
                assert_eq!(r.signed_bytes(), input[..52], "what the signature covers");
            }
        }
        7 => {
            if let Ok(ovmf) = Ovmf::parse(input) {
                // Whatever the table says, asking it must not panic.
                let _ = ovmf.sev_metadata();
                let _ = ovmf.sev_es_reset_eip();
                let _ = ovmf.hashes_table_area();
                let _ = ovmf.secret_area();
            }
        }
        8 => {
            // X.509 as sevctl reads a certificate file: PEM or DER.
            let der = if input.starts_with(b"-----BEGIN") {
                match der::pem::decode_vec(input) {
                    Ok((_, der)) => der,
                    Err(_) => return,
                }
            } else {
                input.to_vec()
            };
            if let Ok(cert) = x509::from_der(&der) {
                let _ = x509::vcek_tcb(&cert);
                let _ = x509::to_der(&cert);
            }
        }
        10 => {
            // A migration packet (header ‖ transport bytes) under fixed transport keys: only
            // one sealed with them opens, and then it seals back to the same bytes.
            let Some((header, trans)) = input.split_first_chunk::<PACKET_HEADER_LEN>() else {
                return;
            };
            let keys = TransportKeys {
                tek: Zeroizing::new([1; 16]),
                tik: Zeroizing::new([2; 16]),
            };
            if let Ok(plain) = open_packet(&keys, header, trans) {
                let iv: [u8; 16] = header[4..20].try_into().expect("16 bytes");
                let again = seal_packet(&keys, iv, &plain).expect("seal");
                assert_eq!(again.trans, trans, "packet round trip");
            }
        }
        _ => {
            // The sealed NV store under this chip's keys: only the chip's own seal opens it,
            // so this checks that everything else is refused cleanly.
            let chip = chip();
            let (Ok(seal), Ok(v1)) = (chip.nv_seal_key(), chip.nv_v1_mac_key()) else {
                return;
            };
            let _ = sevd::firmware::nv::PlatformKeys::decode(input, &seal, &v1);
        }
    }
}
