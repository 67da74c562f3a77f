//! The guest owner's offline tools, with sevctl's arguments and file formats: session,
//! measurement build, secret build, vmsa build and show.

use std::path::{Path, PathBuf};

use uapi::cert::{algo, usage, Certificate};

use sevd::crypto::ecc::{EcKeyPair, EcPublic};
use sevd::owner::measurement::{measure, MeasuredPlatform};
use sevd::owner::secret::secret_mac;
use sevd::owner::session::{wrap, TransportKeys};

use crate::error::{input, Result};
use crate::util::{self, b64};
use crate::vmsa::{Init, Vmm, Vmsa};
use sevd::owner::ovmf::Ovmf;
use sevd::owner::tables;

/// The owner's side of a session with a platform whose PDH is `pdh`.
pub struct OwnerSession {
    /// The owner's DH certificate (GODH).
    pub godh: Vec<u8>,
    /// The 128-byte session buffer.
    pub session: Vec<u8>,
    /// TEK and TIK.
    pub keys: TransportKeys,
}

/// Makes fresh keys and wraps them for `pdh` under `policy`.
pub fn new_session(pdh: &Certificate, policy: u32) -> Result<OwnerSession> {
    let pdh_key = EcPublic::from_certificate(pdh)
        .filter(|_| pdh.usage == usage::PDH)
        .ok_or_else(|| input("the PDH certificate does not hold a P-384 PDH key"))?;
    let godh_key = EcKeyPair::generate()?;
    let godh = godh_key.certificate((0, 0), usage::PDH, algo::ECDH_SHA256)?;
    let keys = TransportKeys::generate()?;
    let nonce = sevd::crypto::random_bytes::<16>()?;
    let iv = sevd::crypto::random_bytes::<16>()?;
    let session = wrap(&godh_key.ecdh(&pdh_key)?, nonce, iv, &keys, policy)?;
    Ok(OwnerSession {
        godh: godh.encode(),
        session: session.encode().to_vec(),
        keys,
    })
}

/// `session [--name NAME] PDH POLICY`: writes NAME_godh.b64, NAME_session.b64, NAME_tek.bin,
/// NAME_tik.bin (keys mode 0600), as sevctl does.
pub fn session(name: Option<&str>, pdh: &Path, policy: u32) -> Result<()> {
    let pdh =
        Certificate::decode(&util::read("PDH", pdh)?).map_err(|e| input(format!("PDH: {e}")))?;
    let s = new_session(&pdh, policy)?;
    let prefix = name.unwrap_or("vm");
    util::write(Path::new(&format!("{prefix}_tik.bin")), &*s.keys.tik, true)?;
    util::write(Path::new(&format!("{prefix}_tek.bin")), &*s.keys.tek, true)?;
    util::write(
        Path::new(&format!("{prefix}_godh.b64")),
        b64(&s.godh).as_bytes(),
        false,
    )?;
    util::write(
        Path::new(&format!("{prefix}_session.b64")),
        b64(&s.session).as_bytes(),
        false,
    )
}

/// `measurement build` arguments (sevctl's).
#[derive(Debug, clap::Args)]
pub struct MeasurementArgs {
    /// Firmware API major.
    #[arg(long)]
    pub api_major: String,
    /// Firmware API minor.
    #[arg(long)]
    pub api_minor: String,
    /// Firmware build id.
    #[arg(long)]
    pub build_id: String,
    /// Guest policy.
    #[arg(long)]
    pub policy: String,
    /// MNONCE (base64 or file).
    #[arg(long)]
    pub nonce: Option<String>,
    /// LAUNCH_MEASURE output (base64 or file); its last 16 bytes are the nonce.
    #[arg(long = "launch-measure-blob")]
    pub launch_measure_blob: Option<String>,
    /// TIK (base64 or file).
    #[arg(long)]
    pub tik: String,
    /// The launch digest (base64), instead of the images.
    #[arg(long)]
    pub launch_digest: Option<String>,
    /// Firmware image.
    #[arg(long)]
    pub firmware: Option<PathBuf>,
    /// Kernel measured through the hashes table.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initrd.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// vCPUs (SEV-ES).
    #[arg(long = "num-cpus")]
    pub num_cpus: Option<u32>,
    /// VMSA of CPU 0.
    #[arg(long = "vmsa-cpu0")]
    pub vmsa_cpu0: Option<PathBuf>,
    /// VMSA of the other CPUs.
    #[arg(long = "vmsa-cpu1")]
    pub vmsa_cpu1: Option<PathBuf>,
    /// Write the 48 bytes here instead of printing base64.
    #[arg(long)]
    pub outfile: Option<PathBuf>,
}

/// The launch digest of the images `args` names.
fn launch_digest(args: &MeasurementArgs, policy: u32) -> Result<Vec<u8>> {
    if let Some(ld) = &args.launch_digest {
        return util::unb64("--launch-digest", ld);
    }
    let fw = args
        .firmware
        .as_ref()
        .ok_or_else(|| input("One of --firmware or --launch-digest must be specified."))?;
    let mut content = util::read("--firmware", fw)?;
    if let Some(kernel) = &args.kernel {
        let (Some(initrd), Some(cmdline)) = (&args.initrd, &args.cmdline) else {
            return Err(input(
                "--kernel, --initrd, --cmdline must be specified together",
            ));
        };
        content.extend(tables::kernel_hashes(
            &util::read("--kernel", kernel)?,
            &util::read("--initrd", initrd)?,
            cmdline,
        )?);
    }
    if policy & 0x4 != 0 {
        let n = args
            .num_cpus
            .ok_or_else(|| input("SEV-ES policy bit is set, CPU/VMSA info must be specified"))?;
        let (Some(v0), Some(v1)) = (&args.vmsa_cpu0, &args.vmsa_cpu1) else {
            return Err(input(
                "--num-cpus, --vmsa-cpu0, --vmsa-cpu1 must be specified together",
            ));
        };
        content.extend(util::read("--vmsa-cpu0", v0)?);
        let ap = util::read("--vmsa-cpu1", v1)?;
        for _ in 1..n {
            content.extend(&ap);
        }
    }
    Ok(sevd::crypto::sha256(&content).to_vec())
}

/// `measurement build`: MEASURE ‖ MNONCE for the given inputs.
pub fn measurement_build(args: &MeasurementArgs) -> Result<()> {
    let policy = util::hex_or_int("--policy", &args.policy)?;
    let digest: [u8; 32] = launch_digest(args, policy)?
        .try_into()
        .map_err(|_| input("--launch-digest: not 32 bytes"))?;
    let platform = MeasuredPlatform {
        api_major: util::hex_or_int("--api-major", &args.api_major)? as u8,
        api_minor: util::hex_or_int("--api-minor", &args.api_minor)? as u8,
        build: util::hex_or_int("--build-id", &args.build_id)? as u8,
    };
    let tik = util::key16("--tik", &args.tik)?;
    let nonce = match (&args.nonce, &args.launch_measure_blob) {
        (Some(n), _) => util::base64_or_path("--nonce", n)?,
        (None, Some(blob)) => {
            let blob = util::base64_or_path("--launch-measure-blob", blob)?;
            blob.get(32..).map(|n| n.to_vec()).unwrap_or_default()
        }
        (None, None) => {
            return Err(input(
                "One of --nonce or --launch-measure-blob must be specified.",
            ))
        }
    };
    let nonce: [u8; 16] = nonce
        .try_into()
        .map_err(|_| input("the nonce is not 16 bytes"))?;
    let m = measure(&tik, platform, policy, &digest, &nonce)?;
    let out = [&m[..], &nonce].concat();
    match &args.outfile {
        Some(f) => {
            util::write(f, &out, false)?;
            crate::steps::say(format_args!("Wrote outfile: {}", f.display()));
        }
        None => println!("{}", b64(&out)),
    }
    Ok(())
}

/// `secret build` arguments (sevctl's).
#[derive(Debug, clap::Args)]
pub struct SecretArgs {
    /// TIK (base64 or file).
    #[arg(long)]
    pub tik: String,
    /// TEK (base64 or file).
    #[arg(long)]
    pub tek: String,
    /// LAUNCH_MEASURE output (base64 or file).
    #[arg(long = "launch-measure-blob")]
    pub launch_measure_blob: String,
    /// IV (base64); random when absent.
    #[arg(long, hide = true)]
    pub iv: Option<String>,
    /// GUID:FILE, repeatable.
    #[arg(long, number_of_values = 1)]
    pub secret: Vec<String>,
    /// Where the 52-byte header goes.
    pub header_file: PathBuf,
    /// Where the encrypted table goes.
    pub payload_file: PathBuf,
}

/// Builds a LAUNCH_SECRET packet for `table`: the 52-byte header and the ciphertext.
pub fn secret_packet(
    tek: &[u8; 16],
    tik: &[u8; 16],
    measure: &[u8; 32],
    iv: [u8; 16],
    table: &[u8],
) -> Result<(Vec<u8>, Vec<u8>)> {
    let ct = sevd::crypto::aes128_ctr(tek, &iv, table)?;
    let mac = secret_mac(tik, 0, &iv, table.len() as u32, &ct, measure)?;
    let header = uapi::launch::SecretHeader { flags: 0, iv, mac };
    Ok((header.encode().to_vec(), ct))
}

/// `secret build`.
pub fn secret_build(args: &SecretArgs) -> Result<()> {
    let tek = util::key16("--tek", &args.tek)?;
    let tik = util::key16("--tik", &args.tik)?;
    let blob = util::base64_or_path("--launch-measure-blob", &args.launch_measure_blob)?;
    let measure: [u8; 32] = blob
        .get(..32)
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| input("--launch-measure-blob: shorter than 32 bytes"))?;
    let iv: [u8; 16] = match &args.iv {
        Some(iv) => util::unb64("--iv", iv)?
            .try_into()
            .map_err(|_| input("--iv: not 16 bytes"))?,
        None => sevd::crypto::random_bytes()?,
    };
    let mut secrets = vec![];
    for s in &args.secret {
        let (guid, file) = s
            .split_once(':')
            .ok_or_else(|| input("Unexpected --secret format"))?;
        sevd::owner::guid::guid_le(guid)?;
        secrets.push((
            guid.to_string(),
            util::read_secret("--secret", Path::new(file))?,
        ));
    }
    let table = tables::secret_table(&secrets)?;
    let (header, payload) = secret_packet(&tek, &tik, &measure, iv, &table)?;
    util::write(&args.header_file, &header, false)?;
    crate::steps::say(format_args!(
        "Wrote header to: {}",
        args.header_file.display()
    ));
    util::write(&args.payload_file, &payload, false)?;
    crate::steps::say(format_args!(
        "Wrote payload to: {}",
        args.payload_file.display()
    ));
    Ok(())
}

/// `vmsa build` arguments (sevctl's).
#[derive(Debug, clap::Args)]
pub struct VmsaBuildArgs {
    /// Where to write the VMSA.
    pub filename: PathBuf,
    /// CPU number.
    #[arg(long)]
    pub cpu: u64,
    /// CPU family.
    #[arg(long)]
    pub family: Option<u32>,
    /// CPU model.
    #[arg(long)]
    pub model: Option<u32>,
    /// CPU stepping.
    #[arg(long)]
    pub stepping: Option<u32>,
    /// OVMF image, for the APs' reset vector.
    #[arg(long)]
    pub firmware: Option<PathBuf>,
    /// The VMM whose reset state to build (krun is not supported here).
    #[arg(long, value_enum, ignore_case = true, default_value_t = Vmm::Qemu)]
    pub userspace: Vmm,
    /// The save area KVM_SEV_INIT2 measures (QEMU 9.1+ on Linux 6.10+: the vCPU's FPU state
    /// synced in), instead of the legacy init's that virtee sevctl 0.6.2 builds.
    #[arg(long)]
    pub init2: bool,
}

/// `vmsa build`.
pub fn vmsa_build(args: &VmsaBuildArgs) -> Result<()> {
    let vmm = args.userspace;
    let reset = match &args.firmware {
        Some(fw) if args.cpu != 0 => Some(
            Ovmf::parse(&util::read("--firmware", fw)?)?
                .sev_es_reset_eip()
                .ok_or_else(|| input("the firmware has no SEV-ES reset block"))?,
        ),
        _ => None,
    };
    let sig = Vmsa::signature(
        args.family.unwrap_or(0),
        args.model.unwrap_or(0),
        args.stepping.unwrap_or(0),
    );
    let init = if args.init2 {
        Init::Init2
    } else {
        Init::Legacy
    };
    util::write(
        &args.filename,
        &Vmsa::reset(vmm, init, args.cpu, reset, sig).encode(),
        false,
    )
}

/// `vmsa show FILE`: every field as JSON, as sevctl prints it.
pub fn vmsa_show(file: &Path) -> Result<()> {
    let page = util::read("VMSA", file)?;
    let area = crate::vmsa::SaveArea::decode(&page)
        .ok_or_else(|| input(format!("Expected VMSA length 4096, was {}", page.len())))?;
    println!(
        "{}",
        serde_json::to_string_pretty(&area).map_err(|e| input(e.to_string()))?
    );
    Ok(())
}
