//! Byte views of plain-old-data ABI structs.

/// A type whose every bit pattern is valid and which has no padding that could leak
/// uninitialised memory, so it can be viewed as and built from raw bytes.
///
/// # Safety
/// Implement only for `#[repr(C)]` or `#[repr(C, packed)]` structs made of integers and
/// integer arrays, whose explicit padding fields leave no implicit padding.
pub unsafe trait ByteValued: Copy + Default {
    /// The value's bytes, in memory order (little-endian on x86-64).
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: the trait's contract says `Self` has no implicit padding, so all
        // `size_of::<Self>()` bytes are initialised, and the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(self as *const Self as *const u8, size_of::<Self>()) }
    }

    /// The value's bytes, mutable.
    fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_bytes`; and every bit pattern is a valid `Self`, so writes
        // through the slice cannot make an invalid value.
        unsafe { std::slice::from_raw_parts_mut(self as *mut Self as *mut u8, size_of::<Self>()) }
    }

    /// Builds a value from exactly `size_of::<Self>()` bytes; `None` for any other length.
    fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != size_of::<Self>() {
            return None;
        }
        let mut value = Self::default();
        value.as_bytes_mut().copy_from_slice(bytes);
        Some(value)
    }
}

/// Implements [`ByteValued`] for ABI structs and checks their size at compile time.
macro_rules! byte_valued {
    ($($ty:ty = $size:expr),* $(,)?) => {$(
        // SAFETY: the struct is repr(C) or repr(C, packed), built of integers with explicit
        // padding fields; the size assertion below proves there is no implicit padding left.
        unsafe impl $crate::bytes::ByteValued for $ty {}
        const _: () = assert!(size_of::<$ty>() == $size);
    )*};
}
pub(crate) use byte_valued;
