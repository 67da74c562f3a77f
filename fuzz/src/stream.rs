//! sevctl's migration stream as a destination reads it off a socket: the hello, then
//! records until the stream ends or one is refused. Every refusal is an error, never a panic;
//! a record that is accepted writes back to bytes that read back to itself, with the same
//! share of END's tally.

use sevctl_cli::migrate::stream::{read_hello, Record, Tally};

/// The hello and every record of `data`.
pub fn migration_stream(data: &[u8]) {
    let mut r = data;
    if read_hello(&mut r).is_err() {
        return;
    }
    let mut tally = Tally::default();
    loop {
        let before = r;
        let Ok((record, digest)) = Record::read_from(&mut r) else {
            break;
        };
        let received = &before[..before.len() - r.len()];
        let mut again = vec![];
        let written = record.write_to(&mut again).expect("writing to memory");
        let (back, reread) = Record::read_from(&mut &again[..]).expect("what was read reads back");
        assert_eq!(back, record, "a record reads back to itself");
        assert_eq!(reread, written, "its tally share is what its writer counts");
        // Bytes the format spells one way only (not a reason in invalid UTF-8, say) come
        // back as they were, with the share they arrived with.
        if again == received {
            assert_eq!(digest, written);
        }
        tally.add(&record, &digest);
    }
    let _ = tally.end();
}
