//! What runs inside an SNP guest: the guest's half of SNP_GUEST_REQUEST, as Linux's
//! sev-guest driver does it (snp.md §7): messages sealed under a VMPCK from the secrets page,
//! sequence numbers kept in step with the firmware's, answers opened and checked.

mod messages;

pub use messages::{GuestChannel, GuestRequestError, KeyRequest, ReportResponse};
