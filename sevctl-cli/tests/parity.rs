//! Byte-identical outputs with virtee sevctl where the inputs fix them: the published
//! vectors of sevctl 0.6.2's tests/measurementbuild.rs, tests/secretbuild.rs and
//! tests/vmsabuild.rs, with its test data (tests/data/README.md).

use std::path::PathBuf;
use std::process::Command;

use base64::Engine;

fn data(p: &str) -> String {
    format!("{}/tests/data/{p}", env!("CARGO_MANIFEST_DIR"))
}

fn sevctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sevctl"))
        .args(args)
        .output()
        .expect("run sevctl")
}

fn ok(args: &[&str]) -> String {
    let out = sevctl(args);
    assert!(
        out.status.success(),
        "sevctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

const OVMF: &str = "OVMF.amdsev.fd_trimmed_edk2-ovmf-20220126gitbb1bba3d77-4.el9";

fn measurement(extra: &[&str]) -> String {
    let tik = data("measurement/tik1.bin");
    let mut args = vec![
        "measurement",
        "build",
        "--api-major",
        "0x01",
        "--api-minor",
        "40",
        "--build-id",
        "40",
        "--policy",
        "0x03",
        "--tik",
        &tik,
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

#[test]
fn measurement_build_vectors() {
    let nonce = ["--nonce", "wxP6tRHCFrFQWxsuqZA8QA=="];
    let digest = [
        &nonce[..],
        &[
            "--launch-digest",
            "xkvRAfyaSizgonxAjZIAkR8TmolUabBKQKb6KJCDDSM=",
        ],
    ]
    .concat();
    assert_eq!(
        measurement(&digest),
        "lswbxWxI9gckya16JQvdFtpYmNO4b+3inAPpqsgoBI7DE/q1EcIWsVBbGy6pkDxA"
    );

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.bin");
    let with_out = [&digest[..], &["--outfile", out.to_str().unwrap()]].concat();
    measurement(&with_out);
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD.encode(bytes),
        "lswbxWxI9gckya16JQvdFtpYmNO4b+3inAPpqsgoBI7DE/q1EcIWsVBbGy6pkDxA"
    );

    let fw = data(OVMF);
    let firmware = [&nonce[..], &["--firmware", &fw]].concat();
    assert_eq!(
        measurement(&firmware),
        "oMDewIouJSpbpNRHj7Mk3p08H2dPZQdsZMU14qIymBnDE/q1EcIWsVBbGy6pkDxA"
    );

    let (k, i) = (
        data("measurement/vmlinuz-fake"),
        data("measurement/initrd-fake"),
    );
    let kernel = [
        &firmware[..],
        &[
            "--kernel",
            &k,
            "--initrd",
            &i,
            "--cmdline",
            "foo bar baz fake kernel=cmdline",
        ],
    ]
    .concat();
    assert_eq!(
        measurement(&kernel),
        "h3auYbWQnVW7EGLWN4Hf9SN0oEYMPU2sK4bLnefWPwvDE/q1EcIWsVBbGy6pkDxA"
    );

    // SEV-ES: OVMF ‖ vmsa0 ‖ vmsa1 × 3, API 1.49 build 6, nonce from the blob.
    let expected = "/o0nzDKE5XgtVnUZWPhUea/WZYrTKLExR7KCwuMdbActvpWfXTFk21KMZIAAhQny";
    let (v0, v1) = (data("vmsa0.bin"), data("vmsa1.bin"));
    let tik = data("measurement/tik1.bin");
    let args = [
        "measurement",
        "build",
        "--api-major",
        "1",
        "--api-minor",
        "49",
        "--build-id",
        "6",
        "--policy",
        "0x05",
        "--tik",
        &tik,
        "--launch-measure-blob",
        expected,
        "--firmware",
        &fw,
        "--num-cpus",
        "4",
        "--vmsa-cpu0",
        &v0,
        "--vmsa-cpu1",
        &v1,
    ];
    assert_eq!(ok(&args), expected);
    // Refused inputs get exit code 2 and say why.
    let out = sevctl(&[
        "measurement",
        "build",
        "--api-major",
        "1",
        "--api-minor",
        "1",
        "--build-id",
        "1",
        "--policy",
        "0x05",
        "--tik",
        &tik,
        "--nonce",
        "wxP6tRHCFrFQWxsuqZA8QA==",
        "--firmware",
        &fw,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CPU/VMSA info must be specified"));
}

fn secret_build(secrets: &[String], iv: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (h, p) = (dir.path().join("h"), dir.path().join("p"));
    let (tik, tek) = (data("secret/tik1.bin"), data("secret/tek1.bin"));
    let mut args = vec![
        "secret".to_string(),
        "build".into(),
        "--tik".into(),
        tik,
        "--tek".into(),
        tek,
        "--launch-measure-blob".into(),
        "TLeA7607lZQntLjRY1/i+sbtdSZ+75zxpz4Px9hzpBLwItF5Q2o4prA++3ZZv9ZS".into(),
    ];
    for s in secrets {
        args.push("--secret".into());
        args.push(s.clone());
    }
    if let Some(iv) = iv {
        args.push("--iv".into());
        args.push(iv.into());
    }
    args.push(h.to_str().unwrap().into());
    args.push(p.to_str().unwrap().into());
    let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    ok(&refs);
    (std::fs::read(h).unwrap(), std::fs::read(p).unwrap())
}

#[test]
fn secret_build_vectors() {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let s1 = format!(
        "736869e5-84f0-4973-92ec-06879ce3da0b:{}",
        data("secret/secret1.txt")
    );
    let s2 = format!(
        "736869e5-aaaa-4973-92ec-06879ce3da0b:{}",
        data("secret/secret2.txt")
    );
    let iv = Some("rFR07U3TLH2YnsUj2SVZ7A==");
    let (h, p) = secret_build(std::slice::from_ref(&s1), iv);
    assert_eq!(
        b64(&h),
        "AAAAAKxUdO1N0yx9mJ7FI9klWey8FSzeYQ4X8K71VzNKLU/KQsIsQxLjtbhaPUewqshX5Q=="
    );
    assert_eq!(
        b64(&p),
        "0U3e5PcXv0UW+H4tSBFKOdCYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCCwD/2w5cPA=="
    );
    let (h, p) = secret_build(&[s1.clone(), s2], iv);
    assert_eq!(
        b64(&h),
        "AAAAAKxUdO1N0yx9mJ7FI9klWeyZ3r0dOEKHUOhIRqzGYYvTJgdMtBPL1nK6GD9aGET7Ng=="
    );
    assert_eq!(b64(&p), "0U3e5PcXv0UW+H4tSBFKObWYfKE1+j38Bc2fuO16mYiyI+sWx7INfn+lgYj56GL12yyinDa+lVfCC+WWs332lpLNUX1ZI3YK7vYgtys4X+uGxEIlkIQ90v8/w8ZFmQMe");
    assert_ne!(
        secret_build(std::slice::from_ref(&s1), None),
        secret_build(std::slice::from_ref(&s1), None),
        "a random IV"
    );
    // The largest secrets: 16 + 4 + (16 + 4 + padded) ≤ 16384, padded to 16.
    for f in ["secret3.txt", "secret4.txt"] {
        let (_, p) = secret_build(
            &[format!(
                "23058844-597b-42fb-8259-a0f5d9d495af:{}",
                data(&format!("secret/{f}"))
            )],
            iv,
        );
        assert!(p.len() <= 16384 && p.len() % 16 == 0);
    }
}

#[test]
fn vmsa_build_matches_sevctl() {
    let dir = tempfile::tempdir().unwrap();
    for (cpu, expected) in [("0", "vmsa0.bin"), ("1", "vmsa1.bin")] {
        let out: PathBuf = dir.path().join(format!("vmsa{cpu}"));
        ok(&[
            "vmsa",
            "build",
            out.to_str().unwrap(),
            "--cpu",
            cpu,
            "--family",
            "25",
            "--model",
            "1",
            "--stepping",
            "1",
            "--userspace",
            "qemu",
            "--firmware",
            &data(OVMF),
        ]);
        assert_eq!(
            std::fs::read(&out).unwrap(),
            std::fs::read(data(expected)).unwrap(),
            "CPU {cpu}"
        );
    }
    // `vmsa show` prints what sevctl prints (tests/vmsashow.rs), byte for byte.
    for (bin, shown) in [
        ("vmsa0.bin", "vmsa0-show.txt"),
        ("vmsa1.bin", "vmsa1-show.txt"),
    ] {
        let out = sevctl(&["vmsa", "show", &data(bin)]);
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            std::fs::read_to_string(data(shown)).unwrap(),
            "{bin}"
        );
    }
}
