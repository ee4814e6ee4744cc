//! [`numbered!`](crate::numbered): the one way the contract declares a number with named values
//! (kinds, classes, states, levels, feature bits). Such a type is a `#[repr(transparent)]`
//! newtype over an integer rather than an enum, so that a later ABI version can add values
//! without breaking the layout check of plugins built before; a value this side does not know
//! keeps its number and is named "unknown".

/// Declares a numeric newtype with its named values: the constants, the table of names
/// (`NAMED`) and `name()`. The attributes (documentation, derives) are the caller's.
#[macro_export]
#[doc(hidden)]
macro_rules! numbered {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($repr:ty) {
            $( $(#[$value_meta:meta])* $value:ident = $number:expr => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[repr(transparent)]
        pub struct $name(pub $repr);

        impl $name {
            $( $(#[$value_meta])* pub const $value: Self = Self($number); )*

            /// Every named value, with its lower-case name.
            pub const NAMED: &'static [(Self, &'static str)] = &[$((Self::$value, $text)),*];

            /// The lower-case name of this value, or "unknown" for a number this side does not
            /// know.
            pub fn name(self) -> &'static str {
                Self::NAMED.iter().find(|(value, _)| value.0 == self.0).map_or("unknown", |(_, name)| *name)
            }
        }
    };
}
