//! `vmsa show`: a save area decoded field by field. The save areas themselves are built by
//! [`sevd::owner::vmsa`], which a guest owner and `vmsa build` share.

use serde::Serialize;

pub use sevd::owner::vmsa::*;

/// The whole save area, field by field as sevctl's `vmsa show` prints it (APM vol. 2 table
/// B-4 up to the x87 state pointer), so the two tools print the same JSON.
#[derive(Debug, Serialize)]
pub struct SaveArea {
    es: Segment,
    cs: Segment,
    ss: Segment,
    ds: Segment,
    fs: Segment,
    gs: Segment,
    gdtr: Segment,
    ldtr: Segment,
    idtr: Segment,
    tr: Segment,
    reserved_1: Vec<u8>,
    cpl: u8,
    reserved_2: Vec<u8>,
    efer: u64,
    reserved_3: Vec<u8>,
    xss: u64,
    cr4: u64,
    cr3: u64,
    cr0: u64,
    dr7: u64,
    dr6: u64,
    rflags: u64,
    rip: u64,
    reserved_4: Vec<u8>,
    rsp: u64,
    reserved_5: Vec<u8>,
    rax: u64,
    star: u64,
    lstar: u64,
    cstar: u64,
    sfmask: u64,
    kernel_gs_base: u64,
    sysenter_cs: u64,
    sysenter_esp: u64,
    sysenter_eip: u64,
    cr2: u64,
    reserved_6: Vec<u8>,
    g_pat: u64,
    dbgctl: u64,
    br_from: u64,
    br_to: u64,
    last_excp_from: u64,
    last_excp_to: u64,
    reserved_7: Vec<u8>,
    spec_ctrl: u64,
    reserved_7b: Vec<u8>,
    pkru: u32,
    reserved_7a: Vec<u8>,
    reserved_8: u32,
    rcx: u64,
    rdx: u64,
    rbx: u64,
    reserved_9: u64,
    rbp: u64,
    rsi: u64,
    rdi: u64,
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    reserved_10: Vec<u8>,
    sw_exit_code: u64,
    sw_exit_info_1: u64,
    sw_exit_info_2: u64,
    sw_scratch: u64,
    reserved_11: Vec<u8>,
    xcr0: u64,
    valid_bitmap: Vec<u8>,
    x87_state_gpa: u64,
}

/// Reads the page in order: each call takes the next field.
struct Cursor<'a> {
    page: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let v = self.page[self.at..self.at + n].to_vec();
        self.at += n;
        v
    }
    fn u8(&mut self) -> u8 {
        self.bytes(1)[0]
    }
    fn u16(&mut self) -> u16 {
        let b = self.bytes(2);
        u16::from_le_bytes([b[0], b[1]])
    }
    fn u32(&mut self) -> u32 {
        let b = self.bytes(4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    fn u64(&mut self) -> u64 {
        let b = self.bytes(8);
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
    fn seg(&mut self) -> Segment {
        Segment {
            selector: self.u16(),
            attrib: self.u16(),
            limit: self.u32(),
            base: self.u64(),
        }
    }
}

impl SaveArea {
    /// Decodes a 4096-byte page; `None` for any other length.
    pub fn decode(page: &[u8]) -> Option<SaveArea> {
        if page.len() != VMSA_LEN {
            return None;
        }
        let mut c = Cursor { page, at: 0 };
        Some(SaveArea {
            es: c.seg(),
            cs: c.seg(),
            ss: c.seg(),
            ds: c.seg(),
            fs: c.seg(),
            gs: c.seg(),
            gdtr: c.seg(),
            ldtr: c.seg(),
            idtr: c.seg(),
            tr: c.seg(),
            reserved_1: c.bytes(43),
            cpl: c.u8(),
            reserved_2: c.bytes(4),
            efer: c.u64(),
            reserved_3: c.bytes(104),
            xss: c.u64(),
            cr4: c.u64(),
            cr3: c.u64(),
            cr0: c.u64(),
            dr7: c.u64(),
            dr6: c.u64(),
            rflags: c.u64(),
            rip: c.u64(),
            reserved_4: c.bytes(88),
            rsp: c.u64(),
            reserved_5: c.bytes(24),
            rax: c.u64(),
            star: c.u64(),
            lstar: c.u64(),
            cstar: c.u64(),
            sfmask: c.u64(),
            kernel_gs_base: c.u64(),
            sysenter_cs: c.u64(),
            sysenter_esp: c.u64(),
            sysenter_eip: c.u64(),
            cr2: c.u64(),
            reserved_6: c.bytes(32),
            g_pat: c.u64(),
            dbgctl: c.u64(),
            br_from: c.u64(),
            br_to: c.u64(),
            last_excp_from: c.u64(),
            last_excp_to: c.u64(),
            reserved_7: c.bytes(72),
            spec_ctrl: c.u64(),
            reserved_7b: c.bytes(4),
            pkru: c.u32(),
            reserved_7a: c.bytes(20),
            reserved_8: c.u32(),
            rcx: c.u64(),
            rdx: c.u64(),
            rbx: c.u64(),
            reserved_9: c.u64(),
            rbp: c.u64(),
            rsi: c.u64(),
            rdi: c.u64(),
            r8: c.u64(),
            r9: c.u64(),
            r10: c.u64(),
            r11: c.u64(),
            r12: c.u64(),
            r13: c.u64(),
            r14: c.u64(),
            r15: c.u64(),
            reserved_10: c.bytes(16),
            sw_exit_code: c.u64(),
            sw_exit_info_1: c.u64(),
            sw_exit_info_2: c.u64(),
            sw_scratch: c.u64(),
            reserved_11: c.bytes(56),
            xcr0: c.u64(),
            valid_bitmap: c.bytes(16),
            x87_state_gpa: c.u64(),
        })
    }
}
