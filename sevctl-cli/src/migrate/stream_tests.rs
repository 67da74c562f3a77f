use super::*;

fn run(gpa: u64, n: u32, fill: u8) -> PageRun {
    let mut r = PageRun::new(gpa, n);
    let (h, t) = r.parts_mut();
    h.fill(fill);
    t.fill(fill ^ 0xff);
    r
}

fn samples() -> Vec<Record> {
    vec![
        Record::Platform {
            pdh: vec![1; 0x824],
            plat_certs: vec![2; 0x186c],
            amd_certs: vec![],
        },
        Record::Start {
            policy: 0x5,
            pdh: vec![3; 0x824],
            session: vec![4; 128],
        },
        Record::Layout(Layout {
            vcpus: 2,
            slots: vec![(0, 1 << 20), (0xffe0_0000, 0x20_0000)],
            secret: Some((0x80_0000, 64)),
        }),
        Record::Pages(run(0x1000, 3, 7)),
        Record::Vmsa {
            vcpu: 1,
            header: vec![5; HDR],
            trans: vec![6; PAGE],
        },
        Record::End {
            pages: 3,
            vmsas: 1,
            tally: [9; 32],
        },
        Record::Ready,
        Record::Commit,
        Record::Running,
        Record::Abort("SEND_START: POLICY_FAILURE".into()),
    ]
}

#[test]
fn every_record_reads_back_with_the_same_digest() {
    for r in samples() {
        let mut bytes = vec![];
        let sent = r.write_to(&mut bytes).unwrap();
        let (back, got) = Record::read_from(&mut &bytes[..]).unwrap();
        assert_eq!(back, r);
        assert_eq!(got, sent, "{}", r.name());
    }
}

#[test]
fn the_tally_does_not_depend_on_order_but_on_every_record() {
    let records = [run(0, 2, 1), run(0x2000, 1, 2), run(0x3000, 4, 3)].map(Record::Pages);
    let tally = |order: &[usize]| {
        let mut t = Tally::default();
        for &i in order {
            let d = records[i].write_to(&mut io::sink()).unwrap();
            t.add(&records[i], &d);
        }
        t
    };
    let a = tally(&[0, 1, 2]);
    assert_eq!(a.pages, 7);
    assert_eq!(a, tally(&[2, 0, 1]));
    assert_ne!(a, tally(&[0, 1, 2, 1]), "a replayed record");
    assert_ne!(a.sum, tally(&[0, 2]).sum);
    // The transport bytes are the MAC's business, not the tally's.
    let mut other = run(0, 2, 1);
    other.parts_mut().1[0] ^= 1;
    let d1 = records[0].write_to(&mut io::sink()).unwrap();
    let d2 = Record::Pages(other).write_to(&mut io::sink()).unwrap();
    assert_eq!(d1, d2);
}

#[test]
fn the_hello_names_a_version_mismatch() {
    let mut b = vec![];
    write_hello(&mut b).unwrap();
    read_hello(&mut &b[..]).unwrap();
    b[8] = 2;
    let e = read_hello(&mut &b[..]).unwrap_err().to_string();
    assert!(e.contains("version 2"), "{e}");
    b[0] ^= 1;
    let e = read_hello(&mut &b[..]).unwrap_err().to_string();
    assert!(e.contains("does not speak"), "{e}");
    assert!(matches!(read_hello(&mut &[][..]), Err(StreamError::Closed)));
}

#[test]
fn malformed_records_are_named_not_trusted() {
    let frame = |kind: u32, payload: &[u8]| {
        let mut b = kind.to_le_bytes().to_vec();
        b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        b.extend_from_slice(payload);
        b
    };
    let bad = |bytes: Vec<u8>, says: &str| {
        let e = Record::read_from(&mut &bytes[..]).unwrap_err().to_string();
        assert!(e.contains(says), "{e} (wanted {says:?})");
    };
    bad(frame(77, &[]), "unknown record kind 77");
    // A length beyond its kind's bound is refused before anything is allocated.
    let mut huge = 4u32.to_le_bytes().to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    bad(huge, "at most");
    bad(frame(7, &[0]), "at most");
    bad(frame(2, &[1, 2]), "shorter than its fields");
    let mut start = 5u32.to_le_bytes().to_vec();
    start.extend_from_slice(&u32::MAX.to_le_bytes());
    bad(frame(2, &start), "shorter than its fields");
    bad(frame(6, &[0; 45][..44 - 1]), "shorter");
    let mut pages = 0x1000u64.to_le_bytes().to_vec();
    pages.extend_from_slice(&2u32.to_le_bytes());
    pages.extend_from_slice(&[0; HDR + PAGE]);
    bad(frame(4, &pages), "of 2 pages");
    let mut pages = 0x1001u64.to_le_bytes().to_vec();
    pages.extend_from_slice(&1u32.to_le_bytes());
    pages.extend_from_slice(&[0; HDR + PAGE]);
    bad(frame(4, &pages), "unaligned");
    let mut layout = vec![0u8; 4];
    layout.extend_from_slice(&100u32.to_le_bytes());
    bad(frame(3, &layout), "100 memory slots");
    let mut layout = vec![0u8; 4];
    layout.extend_from_slice(&2u32.to_le_bytes());
    layout.extend_from_slice(&[0; 16]);
    bad(frame(3, &layout), "shorter");
    let mut trailing = vec![];
    samples()[1].write_to(&mut trailing).unwrap();
    let len = u32::from_le_bytes(trailing[4..8].try_into().unwrap()) + 1;
    trailing[4..8].copy_from_slice(&len.to_le_bytes());
    trailing.push(0);
    bad(trailing, "too many");
    // Cut inside a record, and cleanly between records.
    let mut cut = vec![];
    samples()[1].write_to(&mut cut).unwrap();
    cut.truncate(cut.len() - 1);
    bad(cut, "ends inside a record");
    assert!(matches!(
        Record::read_from(&mut &[][..]),
        Err(StreamError::Closed)
    ));
}

#[test]
fn a_long_reason_is_cut_to_fit_at_a_character() {
    let why = "é".repeat(3000);
    let mut b = vec![];
    Record::Abort(why.clone()).write_to(&mut b).unwrap();
    let (back, _) = Record::read_from(&mut &b[..]).unwrap();
    let Record::Abort(cut) = back else { panic!() };
    assert_eq!(cut.len(), 4096);
    assert!(why.starts_with(&cut));
}
