#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sev_fuzz::migration_stream(data));
